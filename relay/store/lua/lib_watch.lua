--[[ lib_watch: a conversation's watch, relay/conversations/watch.py's rules in Lua.

Not a script of its own: redis.py prepends it to the scripts that use it (accept, watch).
watch_observe is watch.observe, watch_owes watch.may_raise, watch_raised watch.raised.

Keys     watch:<digest>  hash: one conversation's watch, named by a digest of its session
                         id (redis.py's _conversation_part), which it keeps whole as
                         `conversation`. Its fields are watch.py's WATCH_FIELDS, a None one
                         absent; booleans are '0' or '1'; floats are Python's repr or
                         %.17g, text that reads back as the very same double. Besides:
                         due_at (Watch.due_at, absent for None), claimed_by ('' for
                         nobody), lease_until, and quiet_at: its score in watches-quiet
                         (absent in a watch written before it).
         watches-due     zset: the watches with a due_at, each by a floor of when it may
                         next be claimed (the later of due_at and lease_until)
         watches-quiet   zset: every watch by a floor of its last_received_at, at most
                         QUIET_STEP_S behind it (watch.lua's purge)

Floors, not the times themselves, so that an event seldom moves a watch in a zset: every
event pushes the end further away, which leaves the floor where it was; only an earlier
deadline (a stretch opening) lowers it. watch.lua's claim and purge put a watch whose floor
has passed, but not its time, at its time (relay/store/sqlite_watches.py does the same).
The due floor is read from the zset itself (ZSCORE), not kept beside it: whatever wrote
the score last (a relay of an older version during a rolling upgrade included), the floor
is compared with what the index really holds.
]]

local QUIET_STEP_S = 600

-- What the rules read of a watch: all but its texts, which may be long (a session id is
-- up to 10 KB) and are only ever written.
local WATCH_STATE = {'opened_at', 'started_at', 'last_event_at', 'last_received_at',
  'visitor_messages', 'agent_messages', 'first_visitor_at', 'first_answer_at',
  'first_agent_at', 'last_agent_at', 'stretch', 'stretch_open', 'stretch_raised', 'asked_at',
  'unanswered_due', 'ends', 'ended', 'end_due', 'due_at', 'claimed_by', 'lease_until',
  'quiet_at'}

-- Read a watch as a table, field -> text (nil when absent): its state, or with
-- `whole`, every field.
local function watch_read(P, digest, whole)
  local key = P .. 'watch:' .. digest
  local w = {}
  if whole then
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do
      w[flat[i]] = flat[i + 1]
    end
  else
    local values = redis.call('HMGET', key, unpack(WATCH_STATE))
    for i, name in ipairs(WATCH_STATE) do
      w[name] = values[i] or nil
    end
  end
  return w
end

-- The earlier or the later of two times as its own text: a time only copied is never
-- written out again.
local function earlier(a, b)
  if tonumber(b) < tonumber(a) then return b end
  return a
end

local function later(a, b)
  if tonumber(b) > tonumber(a) then return b end
  return a
end

-- watch._earliest and watch._latest: the first time seen stands when nothing was known.
local function earliest(known, seen)
  return known and earlier(known, seen) or seen
end

local function latest(known, seen)
  return known and later(known, seen) or seen
end

-- watch._first_answer: the earliest of the known answer and the first agent message that
-- are at or after `first`, or false.
local function first_answer(answer, first_agent, first)
  local found = false
  for _, t in ipairs({answer or false, first_agent or false}) do
    if t and tonumber(t) >= tonumber(first) then
      found = found and earlier(found, t) or t
    end
  end
  return found
end

-- watch._deadline, false for None. A sum of two doubles is the double Python computes,
-- and %.17g writes it out exactly.
local function deadline(received_at, after_s)
  local after = tonumber(after_s)
  if after > 0 then
    return string.format('%.17g', tonumber(received_at) + after)
  end
  return false
end

-- Apply changes (field -> text, or false for None) to the watch `w` as read, and write
-- them with its new due_at. Its place in watches-due moves only when it must (`exact`:
-- to when it may next be claimed; otherwise only to an earlier floor).
local function watch_save(P, digest, w, changes, exact)
  for name, value in pairs(changes) do
    w[name] = value or nil
  end
  local due = nil  -- Watch.due_at
  if w.stretch_open == '1' and w.stretch_raised ~= '1' and w.unanswered_due then
    due = w.unanswered_due
  end
  if w.ended ~= '1' and w.end_due then
    due = due and earlier(due, w.end_due) or w.end_due
  end
  w.due_at, changes.due_at = due, due or false
  local floor = due
  local score = nil  -- its place in watches-due (not read when exact: it moves anyway)
  if not exact then
    score = redis.call('ZSCORE', P .. 'watches-due', digest) or nil
  end
  if due then
    if exact then
      floor = later(due, w.lease_until)
    elseif score then
      floor = earlier(score, due)
    end
  end
  if exact or floor ~= score then
    if floor then
      redis.call('ZADD', P .. 'watches-due', floor, digest)
    else
      redis.call('ZREM', P .. 'watches-due', digest)
    end
  end
  local set, unset = {}, {}
  for name, value in pairs(changes) do
    if value then
      set[#set + 1] = name
      set[#set + 1] = value
    else
      unset[#unset + 1] = name
    end
  end
  local key = P .. 'watch:' .. digest
  if #set > 0 then
    redis.call('HSET', key, unpack(set))
  end
  if #unset > 0 then
    redis.call('HDEL', key, unpack(unset))
  end
end

-- An optional text argument: '' for None, else the text after a leading '='.
local function optional(arg)
  if arg == '' then return false end
  return string.sub(arg, 2)
end

--[[ watch_observe(P, at): move a conversation's watch on by one accepted event; a claim
on it stays; or, with role 'forget', delete it (watch.Forget). ARGV from `at`: digest,
conversation, agent_id, room_name (optional), role, message (optional), timestamp,
received_at, unanswered_after_s, ended_after_s ]]
local function watch_observe(P, at)
  local digest, conversation, agent_id = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local room_name, role, message = optional(ARGV[at + 3]), ARGV[at + 4], optional(ARGV[at + 5])
  local timestamp, received_at = ARGV[at + 6], ARGV[at + 7]
  if role == 'forget' then  -- watch.Forget: relay does not watch; forget the conversation
    if redis.call('DEL', P .. 'watch:' .. digest) == 1 then
      redis.call('ZREM', P .. 'watches-due', digest)
      redis.call('ZREM', P .. 'watches-quiet', digest)
    end
    return
  end
  local w = watch_read(P, digest)
  local c = {}
  if not w.opened_at then  -- a first event: a new watch
    c = {conversation = conversation, opened_at = received_at, agent_id = agent_id,
      room_name = room_name, started_at = timestamp, last_event_at = timestamp,
      last_received_at = received_at, visitor_messages = '0', agent_messages = '0',
      stretch = '0', stretch_open = '0', stretch_raised = '0', ends = '0', ended = '0',
      claimed_by = '', lease_until = '0'}
    for name, value in pairs(c) do
      w[name] = value or nil
    end
  end
  if agent_id ~= '' then
    c.agent_id = agent_id
  end
  if room_name and room_name ~= '' then
    c.room_name = room_name
  end
  c.started_at = earlier(w.started_at, timestamp)
  c.last_event_at = later(w.last_event_at, timestamp)
  c.last_received_at = later(w.last_received_at, received_at)
  -- Every event pushes the end further away; a conversation that had ended carries on.
  -- From the latest event received: a replica whose clock is behind must not pull it back.
  c.ended, c.end_due = '0', deadline(c.last_received_at, ARGV[at + 9])
  -- What answers what, and the first answer, follow the events' own timestamps.
  if role == 'visitor' then
    c.visitor_messages = tostring(tonumber(w.visitor_messages) + 1)
    local first = earliest(w.first_visitor_at, timestamp)
    c.first_visitor_at = first
    c.first_answer_at = first_answer(w.first_answer_at, w.first_agent_at, first)
    local answered = w.last_agent_at and tonumber(timestamp) < tonumber(w.last_agent_at)
    if w.stretch_open ~= '1' and not answered then  -- a new stretch; later ones keep it
      c.stretch, c.stretch_open, c.stretch_raised = tostring(tonumber(w.stretch) + 1), '1', '0'
      c.asked_at, c.asked_received_at, c.asked_message = timestamp, received_at, message
      c.unanswered_due = deadline(received_at, ARGV[at + 8])
    end
  elseif role == 'agent' then
    c.agent_messages = tostring(tonumber(w.agent_messages) + 1)
    c.first_agent_at = earliest(w.first_agent_at, timestamp)
    c.last_agent_at = latest(w.last_agent_at, timestamp)
    local asked_first = w.first_visitor_at
    if asked_first and tonumber(timestamp) >= tonumber(asked_first) then
      c.first_answer_at = earliest(w.first_answer_at, timestamp)
    end
    -- Only an answer at or after the stretch's question closes it.
    if w.stretch_open == '1' and w.asked_at and tonumber(timestamp) >= tonumber(w.asked_at) then
      c.stretch_open, c.unanswered_due = '0', false
    end
  end
  if not w.quiet_at or tonumber(c.last_received_at) - tonumber(w.quiet_at) >= QUIET_STEP_S then
    c.quiet_at = c.last_received_at
    redis.call('ZADD', P .. 'watches-quiet', c.quiet_at, digest)
  end
  watch_save(P, digest, w, c, false)
end

-- Whether the watch `w` owes signal `number` of `kind` at `now` (a number).
local function watch_owes(w, kind, number, now)
  if kind == 'unanswered' then
    return tonumber(w.stretch) == number and w.stretch_open == '1'
      and w.stretch_raised ~= '1' and w.unanswered_due ~= nil
      and tonumber(w.unanswered_due) <= now
  end
  return tonumber(w.ends) == number - 1 and w.ended ~= '1' and w.end_due ~= nil
    and tonumber(w.end_due) <= now
end

-- The changes that mark signal `number` of `kind` raised.
local function watch_raised(kind, number)
  if kind == 'unanswered' then
    return {stretch_raised = '1'}
  end
  return {ended = '1', ends = tostring(number)}
end

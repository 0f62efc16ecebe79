--[[ lib_watch: a conversation's watch, relay/conversations/watch.py's rules in Lua.

Not a script of its own: redis.py prepends it to the scripts that use it (accept, watch).
watch_observe is watch.observe, watch_owes watch.may_raise, watch_raised watch.raised.

Keys     w:<digest>      string: one conversation's watch, named by a digest of its session
                         id (redis.py's _conversation_part), which it keeps whole: the
                         values of WATCH_FIELDS below, in their order, as one MessagePack
                         array (cmsgpack): times and counts as numbers (a double packs
                         exactly), booleans as 1 or 0, texts as they came, false for None.
                         One string, read and written whole: an event costs a GET and a
                         SET, where a hash of ~26 fields cost their parsing and writing.
         w-due           zset: the watches with a due_at, each by a floor of when it may
                         next be claimed (the later of due_at and lease_until)
         w-quiet         zset: every watch by a floor of its last_received_at, at most
                         QUIET_STEP_S behind it (watch.lua's purge)

Floors, not the times themselves, so that an event seldom moves a watch in a zset: every
event pushes the end further away, which leaves the floor where it was; only an earlier
deadline (a stretch opening) lowers it. watch.lua's claim and purge put a watch whose floor
has passed, but not its time, at its time (relay/store/sqlite_watches.py does the same).
The due floor is read from the zset itself (ZSCORE), not kept beside it.

An older relay kept each watch as a hash, watch:<digest>, indexed by watches-due and
watches-quiet. watch_read takes such a watch over (watch_take_over) the first time it reads
it, and watch.lua's 'migrate' takes over the rest; the two formats never share a key, so an
older relay still running beside this one during a rolling upgrade never fails on a watch
this one wrote.

Numbers given to redis.call are written with num(): Lua would write them with 14 digits.
]]

local QUIET_STEP_S = 600

-- relay/conversations/watch.py's WATCH_FIELDS, then what the store keeps beside them: its
-- claim, its quiet floor, and what the activity counters need of it (sqlite_watches.py's
-- version 13). tests/store/test_watch_upgrades.py holds this list to WATCH_FIELDS.
local WATCH_FIELDS = {'conversation', 'opened_at', 'agent_id', 'room_name', 'started_at',
  'last_event_at', 'last_received_at', 'visitor_messages', 'agent_messages',
  'first_visitor_at', 'first_answer_at', 'first_agent_at', 'last_agent_at', 'stretch',
  'stretch_open', 'stretch_raised', 'asked_at', 'asked_received_at', 'asked_message',
  'unanswered_due', 'ends', 'ended', 'end_due', 'claimed_by', 'lease_until', 'quiet_at',
  'events', 'answer_counted', 'unanswered_counted'}
local BOOLEANS = {stretch_open = true, stretch_raised = true, ended = true,
  answer_counted = true, unanswered_counted = true}
local TEXTS = {conversation = true, agent_id = true, room_name = true, asked_message = true,
  claimed_by = true}

local function num(n)
  return string.format('%.17g', n)
end

local function watch_key(P, digest)
  return P .. 'w:' .. digest
end

local function watch_encode(w)
  local values = {}
  for i, name in ipairs(WATCH_FIELDS) do
    local value = w[name]
    if BOOLEANS[name] then
      value = value and 1 or 0
    elseif value == nil then
      value = false
    end
    values[i] = value
  end
  return cmsgpack.pack(values)
end

local function watch_decode(packed)
  local values = cmsgpack.unpack(packed)
  local w = {}
  for i, name in ipairs(WATCH_FIELDS) do
    local value = values[i]
    if BOOLEANS[name] then
      w[name] = value == 1
    elseif value ~= false then
      w[name] = value
    end
  end
  return w
end

-- A watch as the scripts return it to redis.py: field, text, …; numbers written exactly,
-- booleans as '1' or '0', a None one left out (as an older relay's HGETALL gave it).
local function watch_fields(w)
  local flat = {}
  for _, name in ipairs(WATCH_FIELDS) do
    local value = w[name]
    if value ~= nil then
      flat[#flat + 1] = name
      if BOOLEANS[name] then
        flat[#flat + 1] = value and '1' or '0'
      elseif type(value) == 'number' then
        flat[#flat + 1] = num(value)
      else
        flat[#flat + 1] = value
      end
    end
  end
  return flat
end

-- Watch.due_at.
local function watch_due_at(w)
  local due = nil
  if w.stretch_open and not w.stretch_raised and w.unanswered_due then
    due = w.unanswered_due
  end
  if not w.ended and w.end_due then
    due = due and math.min(due, w.end_due) or w.end_due
  end
  return due
end

-- Write the watch, and move its place in w-due only when it must (`exact`: to when it
-- may next be claimed; otherwise only to an earlier floor). A `new` watch has no place yet.
local function watch_save(P, digest, w, exact, new)
  local due = watch_due_at(w)
  local score = nil
  if not exact and not new then
    local found = redis.call('ZSCORE', P .. 'w-due', digest)
    score = found and tonumber(found) or nil
  end
  local floor = due
  if due then
    if exact then
      floor = math.max(due, w.lease_until or 0)
    elseif score then
      floor = math.min(score, due)
    end
  end
  if exact or floor ~= score then
    if floor then
      redis.call('ZADD', P .. 'w-due', num(floor), digest)
    else
      redis.call('ZREM', P .. 'w-due', digest)
    end
  end
  redis.call('SET', watch_key(P, digest), watch_encode(w))
end

-- Take over a watch an older relay kept as a hash: write it as this relay keeps it, and
-- forget the hash and its places in the older indexes. Return it, or nil.
local function watch_take_over(P, digest)
  local old = P .. 'watch:' .. digest
  local flat = redis.call('HGETALL', old)
  if #flat == 0 then
    return nil
  end
  local w = {}
  for i = 1, #flat, 2 do
    local name, text = flat[i], flat[i + 1]
    if TEXTS[name] then
      w[name] = text
    elseif BOOLEANS[name] then
      w[name] = text == '1'
    elseif name ~= 'due_at' then
      w[name] = tonumber(text)
    end
  end
  if w.claimed_by == '' then
    w.claimed_by = nil
  end
  w.lease_until = w.lease_until or 0
  w.quiet_at = w.last_received_at
  -- Counted as started, and as counted what it already had (as SQLite's upgrade does).
  w.events, w.answer_counted = 1, w.first_answer_at ~= nil
  w.unanswered_counted = w.stretch > 1 or w.stretch_raised
  redis.call('DEL', old)
  redis.call('ZREM', P .. 'watches-due', digest)
  redis.call('ZREM', P .. 'watches-quiet', digest)
  redis.call('ZADD', P .. 'w-quiet', num(w.quiet_at), digest)
  watch_save(P, digest, w, true)
  return w
end

-- Read a watch as a table (nil when there is none), taking over an older relay's.
local function watch_read(P, digest)
  local packed = redis.call('GET', watch_key(P, digest))
  if packed then
    return watch_decode(packed)
  end
  return watch_take_over(P, digest)
end

-- Forget a conversation's watch, in either format, and its transcript's list of events.
local function watch_forget(P, digest)
  redis.call('DEL', P .. 'conv:' .. digest)
  if redis.call('DEL', watch_key(P, digest)) == 1 then
    redis.call('ZREM', P .. 'w-due', digest)
    redis.call('ZREM', P .. 'w-quiet', digest)
  end
  if redis.call('DEL', P .. 'watch:' .. digest) == 1 then
    redis.call('ZREM', P .. 'watches-due', digest)
    redis.call('ZREM', P .. 'watches-quiet', digest)
  end
end

-- An optional text argument: '' for None, else the text after a leading '='.
local function optional(arg)
  if arg == '' then return nil end
  return string.sub(arg, 2)
end

local function earliest(known, seen)
  return known and math.min(known, seen) or seen
end

local function latest(known, seen)
  return known and math.max(known, seen) or seen
end

-- watch._deadline: nil when `after` is 0 (never).
local function deadline(received_at, after)
  if after > 0 then
    return received_at + after
  end
  return nil
end

--[[ watch_observe(P, at, counting): move a conversation's watch on by one accepted
event; a claim on it stays; or, with role 'forget', delete it (watch.Forget). ARGV from
`at`: digest, conversation, agent_id, room_name (optional), role, message (optional),
timestamp, received_at, unanswered_after_s, ended_after_s. With `counting`, return the
agent counters its conversation adds (relay/activity/tally.py): a first event, and a
first answer, each once. ]]
local function watch_observe(P, at, counting)
  local digest, role = ARGV[at], ARGV[at + 4]
  if role == 'forget' then  -- watch.Forget: relay does not watch; forget the conversation
    watch_forget(P, digest)
    return {}
  end
  local agent_id, room_name, message = ARGV[at + 2], optional(ARGV[at + 3]), optional(ARGV[at + 5])
  local timestamp, received_at = tonumber(ARGV[at + 6]), tonumber(ARGV[at + 7])
  local w = watch_read(P, digest)
  local new = not w
  if new then  -- a first event: a new watch
    w = {conversation = ARGV[at + 1], opened_at = received_at, agent_id = agent_id,
      room_name = room_name, started_at = timestamp, last_event_at = timestamp,
      last_received_at = received_at, visitor_messages = 0, agent_messages = 0, stretch = 0,
      stretch_open = false, stretch_raised = false, ends = 0, ended = false, lease_until = 0,
      events = 0, answer_counted = false, unanswered_counted = false}
  end
  w.events = w.events + 1
  if agent_id ~= '' then
    w.agent_id = agent_id
  end
  if room_name and room_name ~= '' then
    w.room_name = room_name
  end
  w.started_at = math.min(w.started_at, timestamp)
  w.last_event_at = math.max(w.last_event_at, timestamp)
  w.last_received_at = math.max(w.last_received_at, received_at)
  -- Every event pushes the end further away; a conversation that had ended carries on.
  -- From the latest event received: a replica whose clock is behind must not pull it back.
  w.ended, w.end_due = false, deadline(w.last_received_at, tonumber(ARGV[at + 9]))
  -- What answers what, and the first answer, follow the events' own timestamps.
  if role == 'visitor' then
    w.visitor_messages = w.visitor_messages + 1
    local first = earliest(w.first_visitor_at, timestamp)
    -- watch._first_answer: the earliest of the known answer and the first agent message
    -- that are at or after the first visitor message.
    local answer = nil
    for _, t in ipairs({w.first_answer_at or false, w.first_agent_at or false}) do
      if t and t >= first then
        answer = earliest(answer, t)
      end
    end
    w.first_visitor_at, w.first_answer_at = first, answer
    local answered = w.last_agent_at and timestamp < w.last_agent_at
    if not w.stretch_open and not answered then  -- a new stretch; later ones keep it
      w.stretch, w.stretch_open, w.stretch_raised = w.stretch + 1, true, false
      w.asked_at, w.asked_received_at, w.asked_message = timestamp, received_at, message
      w.unanswered_due = deadline(received_at, tonumber(ARGV[at + 8]))
    end
  elseif role == 'agent' then
    w.agent_messages = w.agent_messages + 1
    w.first_agent_at = earliest(w.first_agent_at, timestamp)
    w.last_agent_at = latest(w.last_agent_at, timestamp)
    if w.first_visitor_at and timestamp >= w.first_visitor_at then
      w.first_answer_at = earliest(w.first_answer_at, timestamp)
    end
    -- Only an answer at or after the stretch's question closes it.
    if w.stretch_open and w.asked_at and timestamp >= w.asked_at then
      w.stretch_open, w.unanswered_due = false, nil
    end
  end
  if not w.quiet_at or w.last_received_at - w.quiet_at >= QUIET_STEP_S then
    w.quiet_at = w.last_received_at
    redis.call('ZADD', P .. 'w-quiet', num(w.quiet_at), digest)
  end
  local counters = {}
  if counting then
    if w.events == 1 then
      counters[#counters + 1] = 'conversations'
    end
    if w.first_answer_at and not w.answer_counted then
      counters[#counters + 1] = first_answer_counter(w.first_answer_at - w.first_visitor_at)
      w.answer_counted = true
    end
  end
  watch_save(P, digest, w, false, new)
  return counters
end

-- Whether the watch `w` owes signal `number` of `kind` at `now` (numbers).
local function watch_owes(w, kind, number, now)
  if kind == 'unanswered' then
    return w.stretch == number and w.stretch_open and not w.stretch_raised
      and w.unanswered_due ~= nil and w.unanswered_due <= now
  end
  return w.ends == number - 1 and not w.ended and w.end_due ~= nil and w.end_due <= now
end

-- Mark signal `number` of `kind` raised.
local function watch_raised(w, kind, number)
  if kind == 'unanswered' then
    w.stretch_raised = true
  else
    w.ended, w.ends = true, number
  end
end

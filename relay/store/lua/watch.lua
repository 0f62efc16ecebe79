--[[ watch: claim the conversation watches that are due, raise their signals, forget the
watches of quiet conversations, read one, and take over those an older relay kept.
(accept.lua moves a watch on with each event.)

KEYS[1]  the store's key prefix (see accept.lua); the keys are lib_watch.lua's
ARGV     'claim', now, limit, owner, lease_until
         or 'raise', digest, kind ('unanswered' or 'ended'), number, owner, then the
            signal's event and deliveries as lib_event.lua's store_event takes them (the
            event's received_at is the moment the signal is raised at), then 'tally' and
            its tally's arguments as lib_tally.lua's tally_add takes them, or nothing
         or 'purge', before, limit
         or 'read', digest
         or 'by_quiet', quiet_at ('' for none), conversation, limit
         or 'migrate', limit
Returns  for 'claim', 1 when it stopped reading before it could tell that nothing more
         is due (it reads at most limit + 1000 watches: redis.py calls again), else 0;
         then the claimed watches' fields (lib_watch.lua's watch_fields), at most
         `limit`, by the floor of when each is due (a watch whose claim ran out counts as
         due from its lease's end);
         for 'raise', 1 when the watch still owed the signal (raised), else 0;
         for 'purge', how many watches went;
         for 'read', the watch's fields, or none;
         for 'by_quiet', up to `limit` watches by their quiet floor (w-quiet), highest
         first, ties by digest, each below (quiet_at, the digest of conversation) when
         given: its floor then its fields, for each;
         for 'migrate', how many watches an older relay kept were taken over
Atomic:  a watch is claimed by one owner at a time: it must be due, and any lease on it
         over. Claimed, it is scored by its lease's end, so a claim reads only the watches
         it may take. A signal is stored, with its dedupe key, only while its watch still
         owes it (watch.may_raise) and in the same step as the watch is marked raised: so
         once, whoever raises it. Raising or not, the owner's claim on the watch goes.
         A watch goes (purge) once its conversation has had no event received since
         `before`, quietest first, at most `limit` in one call; its transcript's list of
         events (conv:<digest>, lib_event.lua) goes with it.
]]
local P = KEYS[1]
local op = ARGV[1]

-- Take over up to `limit` watches an older relay kept (each is in its watches-quiet).
local function migrate(limit)
  local old = redis.call('ZRANGE', P .. 'watches-quiet', 0, limit - 1)
  for _, digest in ipairs(old) do
    if not watch_take_over(P, digest) then
      redis.call('ZREM', P .. 'watches-quiet', digest)
    end
  end
  return #old
end

if op == 'claim' then
  local now, limit, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
  local lease_until = tonumber(ARGV[5])
  -- An older relay still running beside this one may have made watches since the last
  -- call: a few each call, so that those come due too.
  migrate(100)
  local claimed = {}
  -- Every watch read leaves the range (claimed, put at its time, or gone), so each round
  -- reads new ones; a floor that passed before its watch was due does not use up `limit`.
  -- At most limit + 1000 are read in one call.
  local budget = limit + 1000
  local found = {}
  while #claimed < limit and budget > 0 do
    found = redis.call('ZRANGEBYSCORE', P .. 'w-due', '-inf', num(now), 'LIMIT', 0,
      math.min(limit - #claimed, budget))
    if #found == 0 then
      break
    end
    budget = budget - #found
    for _, digest in ipairs(found) do
      local packed = redis.call('GET', watch_key(P, digest))
      local w = packed and watch_decode(packed)
      local due = w and watch_due_at(w)
      if due and math.max(due, w.lease_until) <= now then
        w.claimed_by, w.lease_until = owner, lease_until
        watch_save(P, digest, w, true)
        claimed[#claimed + 1] = watch_fields(w)
      elseif w then  -- its floor passed, but it is not due: put it at its time
        watch_save(P, digest, w, true)
      else
        redis.call('ZREM', P .. 'w-due', digest)
      end
    end
  end
  -- First, whether the budget ran out with watches left to read: redis.py calls again.
  table.insert(claimed, 1, (#claimed < limit and budget <= 0 and #found > 0) and 1 or 0)
  return claimed
end

if op == 'raise' then
  local digest, kind, number, owner = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
  local w = watch_read(P, digest)
  if not w then
    return 0
  end
  local owed = watch_owes(w, kind, number, tonumber(ARGV[8]))  -- the event's received_at
  if owed then
    watch_raised(w, kind, number)
  end
  local released = w.claimed_by == owner
  if released then
    w.claimed_by, w.lease_until = nil, 0
  end
  if owed or released then
    watch_save(P, digest, w, true)
  end
  if not owed then
    return 0
  end
  local taken, after = store_event(P, 6)
  if taken then  -- its id was taken: nothing stored (ingest reserves them)
    return 0
  end
  if ARGV[after] == 'tally' then
    -- A conversation's first conversation.unanswered counts it as unanswered, once.
    local more = {}
    if kind == 'unanswered' and not w.unanswered_counted then
      w.unanswered_counted = true
      redis.call('SET', watch_key(P, digest), watch_encode(w))
      more = {'unanswered'}
    end
    tally_add(P, after + 1, more)
  end
  return 1
end

if op == 'read' then
  local w = watch_read(P, ARGV[2])
  return w and watch_fields(w) or {}
end

if op == 'by_quiet' then
  local limit = tonumber(ARGV[4])
  local top, below = '+inf', nil
  if ARGV[2] ~= '' then
    top, below = ARGV[2], ARGV[3]
  end
  -- Ties on the floor are rare (it is an event's receive time): read a few more than asked
  -- and leave those at the floor given that are not below the cursor's member.
  local found = redis.call('ZREVRANGEBYSCORE', P .. 'w-quiet', top, '-inf', 'WITHSCORES',
    'LIMIT', 0, limit + 64)
  local out = {}
  for i = 1, #found, 2 do
    local digest, score = found[i], found[i + 1]
    if #out >= 2 * limit then
      break
    end
    if not below or tonumber(score) < tonumber(top) or digest < below then
      local packed = redis.call('GET', watch_key(P, digest))
      if packed then
        out[#out + 1] = score
        out[#out + 1] = watch_fields(watch_decode(packed))
      end
    end
  end
  return out
end

if op == 'migrate' then
  return migrate(tonumber(ARGV[2]))
end

-- 'purge': a watch's score in w-quiet is a floor of its last_received_at; one whose floor
-- is quiet but not its last event is put at that event, once, and kept.
local before, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
migrate(limit)
local gone = {}
local budget = limit + 1000
while #gone < limit and budget > 0 do
  local found = redis.call('ZRANGEBYSCORE', P .. 'w-quiet', '-inf', '(' .. num(before),
    'LIMIT', 0, math.min(limit - #gone, budget))
  if #found == 0 then
    break
  end
  budget = budget - #found
  for _, digest in ipairs(found) do
    local packed = redis.call('GET', watch_key(P, digest))
    local w = packed and watch_decode(packed)
    if w and w.last_received_at >= before then
      w.quiet_at = w.last_received_at
      redis.call('SET', watch_key(P, digest), watch_encode(w))
      redis.call('ZADD', P .. 'w-quiet', num(w.quiet_at), digest)
    else
      redis.call('DEL', watch_key(P, digest), P .. 'conv:' .. digest)
      gone[#gone + 1] = digest
      redis.call('ZREM', P .. 'w-quiet', digest)
    end
  end
end
if #gone > 0 then
  redis.call('ZREM', P .. 'w-due', unpack(gone))
end
return #gone

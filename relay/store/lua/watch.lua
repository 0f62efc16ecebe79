--[[ watch: claim the conversation watches that are due, raise their signals, and forget
the watches of quiet conversations. (accept.lua moves a watch on with each event.)

KEYS[1]  the store's key prefix (see accept.lua); the keys are lib_watch.lua's
ARGV     'claim', now, limit, owner, lease_until
         or 'raise', digest, kind ('unanswered' or 'ended'), number, owner, then the
            signal's event and deliveries as lib_event.lua's store_event takes them (the
            event's received_at is the moment the signal is raised at), then 'tally' and
            its tally's arguments as lib_tally.lua's tally_add takes them, or nothing
         or 'purge', before, limit
Returns  for 'claim', 1 when it stopped reading before it could tell that nothing more
         is due (it reads at most limit + 1000 watches: redis.py calls again), else 0;
         then the claimed watches' fields (HGETALL), at most `limit`, by the floor of when
         each is due (lib_watch.lua; a watch whose claim ran out counts as due from its
         lease's end);
         for 'raise', 1 when the watch still owed the signal (raised), else 0;
         for 'purge', how many watches went
Atomic:  a watch is claimed by one owner at a time: it must be due, and any lease on it
         over. Claimed, it is scored by its lease's end, so a claim reads only the watches
         it may take. A signal is stored, with its dedupe key, only while its watch still
         owes it (watch.may_raise) and in the same step as the watch is marked raised: so
         once, whoever raises it. Raising or not, the owner's claim on the watch goes.
         A watch goes (purge) once its conversation has had no event received since
         `before`, quietest first, at most `limit` in one call.
]]
local P = KEYS[1]
local op = ARGV[1]

if op == 'claim' then
  local now, limit, owner, lease_until = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
  local claimed = {}
  -- Every watch read leaves the range (claimed, put at its time, or gone), so each round
  -- reads new ones; a floor that passed before its watch was due does not use up `limit`.
  -- At most limit + 1000 are read in one call.
  local budget = limit + 1000
  local found = {}
  while #claimed < limit and budget > 0 do
    found = redis.call('ZRANGEBYSCORE', P .. 'watches-due', '-inf', now, 'LIMIT', 0,
      math.min(limit - #claimed, budget))
    if #found == 0 then
      break
    end
    budget = budget - #found
    for _, digest in ipairs(found) do
      local w = watch_read(P, digest, true)
      if w.due_at and tonumber(later(w.due_at, w.lease_until)) <= now then
        watch_save(P, digest, w, {claimed_by = owner, lease_until = lease_until}, true)
        local fields = {}
        for name, value in pairs(w) do
          fields[#fields + 1] = name
          fields[#fields + 1] = value
        end
        claimed[#claimed + 1] = fields
      elseif w.opened_at then  -- its floor passed, but it is not due: put it at its time
        watch_save(P, digest, w, {}, true)
      else
        redis.call('ZREM', P .. 'watches-due', digest)
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
  if not w.opened_at then
    return 0
  end
  local owed = watch_owes(w, kind, number, tonumber(ARGV[8]))  -- the event's received_at
  local changes = owed and watch_raised(kind, number) or {}
  if w.claimed_by == owner then
    changes.claimed_by, changes.lease_until = '', '0'
  end
  if next(changes) then
    watch_save(P, digest, w, changes, true)
  end
  if not owed then
    return 0
  end
  local taken, after = store_event(P, 6)
  if taken then  -- its id was taken: nothing stored (ingest reserves them)
    return 0
  end
  if ARGV[after] == 'tally' then
    tally_add(P, after + 1)
  end
  return 1
end

-- 'purge': a watch's score in watches-quiet is a floor of its last_received_at; one whose
-- floor is quiet but not its last event is put at that event, once, and kept.
local before, limit = ARGV[2], tonumber(ARGV[3])
local gone = {}
local budget = limit + 1000
while #gone < limit and budget > 0 do
  local found = redis.call('ZRANGEBYSCORE', P .. 'watches-quiet', '-inf', '(' .. before,
    'LIMIT', 0, math.min(limit - #gone, budget))
  if #found == 0 then
    break
  end
  budget = budget - #found
  for _, digest in ipairs(found) do
    local key = P .. 'watch:' .. digest
    local last = redis.call('HGET', key, 'last_received_at')
    if last and tonumber(last) >= tonumber(before) then
      redis.call('HSET', key, 'quiet_at', last)
      redis.call('ZADD', P .. 'watches-quiet', last, digest)
    else
      redis.call('DEL', key)
      gone[#gone + 1] = digest
      redis.call('ZREM', P .. 'watches-quiet', digest)
    end
  end
end
if #gone > 0 then
  redis.call('ZREM', P .. 'watches-due', unpack(gone))
end
return #gone

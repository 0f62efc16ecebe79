--[[ watch: claim the conversation watches that are due, raise their signals, and forget
the watches of quiet conversations. (accept.lua moves a watch on with each event.)

KEYS[1]  the store's key prefix (see accept.lua); the keys are lib_watch.lua's
ARGV     'claim', now, limit, owner, lease_until
         or 'raise', digest, kind ('unanswered' or 'ended'), number, owner, then the
            signal's event and deliveries as lib_event.lua's store_event takes them; the
            event's received_at is the moment the signal is raised at
         or 'purge', before, limit
Returns  for 'claim', an array of the claimed watches' fields (HGETALL), at most `limit`,
         earliest due first (a watch whose claim ran out counts as due from its lease's
         end: its score in watches-due);
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
  for _, digest in ipairs(redis.call('ZRANGEBYSCORE', P .. 'watches-due', '-inf', now,
      'LIMIT', 0, limit)) do
    local w = watch_read(P, digest, true)
    if w.due_at and tonumber(later(w.due_at, w.lease_until)) <= now then
      watch_save(P, digest, w, {claimed_by = owner, lease_until = lease_until})
      local fields = {}
      for name, value in pairs(w) do
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
      claimed[#claimed + 1] = fields
    elseif w.opened_at then  -- out of place: not due now after all
      watch_save(P, digest, w, {})
    else
      redis.call('ZREM', P .. 'watches-due', digest)
    end
  end
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
    watch_save(P, digest, w, changes)
  end
  if not owed then
    return 0
  end
  if store_event(P, 6) then  -- its id was taken: nothing stored (ingest reserves them)
    return 0
  end
  return 1
end

-- 'purge'
local before, limit = ARGV[2], tonumber(ARGV[3])
local quiet = redis.call('ZRANGEBYSCORE', P .. 'watches-quiet', '-inf', '(' .. before,
  'LIMIT', 0, limit)
if #quiet > 0 then
  for _, digest in ipairs(quiet) do
    redis.call('DEL', P .. 'watch:' .. digest)
  end
  redis.call('ZREM', P .. 'watches-quiet', unpack(quiet))
  redis.call('ZREM', P .. 'watches-due', unpack(quiet))
end
return #quiet

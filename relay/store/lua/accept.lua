--[[ accept: store an event, its deliveries and its dedupe key, or nothing (a duplicate).

KEYS[1]  the store's key prefix, with its hash tag: every key below starts with it, so the
         whole store lives in one cluster slot.
ARGV     event_id, body, received_at, dedupe_window_s, count,
         then count times: destination, rule, template ('' for none), session_key
Returns  1 when the event id was accepted within its dedupe window (nothing stored), else 0.
Atomic:  the dedupe check, the event and every delivery go in together or not at all.
]]
local P = KEYS[1]
local event_id, body, received_at = ARGV[1], ARGV[2], ARGV[3]
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local count = tonumber(ARGV[5])

local dedupe = P .. 'dedupe:' .. event_id
local expires = redis.call('GET', dedupe)
if expires and tonumber(expires) > now then
  return 1
end
-- The window is kept in relay's time (the value); the TTL, in Redis's, only cleans up.
redis.call('SET', dedupe, string.format('%.17g', now + window),
  'PX', math.floor(window * 1000) + 3600000)

local ref = redis.call('INCR', P .. 'eseq')
redis.call('HSET', P .. 'e:' .. ref, 'event_id', event_id, 'body', body,
  'received_at', received_at, 'remaining', count)
redis.call('ZADD', P .. 'events', ref, ref)

for i = 0, count - 1 do
  local destination, rule = ARGV[6 + 4 * i], ARGV[7 + 4 * i]
  local template, session = ARGV[8 + 4 * i], ARGV[9 + 4 * i]
  local id = redis.call('INCR', P .. 'dseq')
  local member = string.format('%016d', id)
  local key = P .. 'd:' .. member
  redis.call('HSET', key, 'event_ref', ref, 'destination', destination, 'rule', rule,
    'session_key', session, 'status', 'pending', 'attempts', 0,
    'created_at', received_at, 'next_attempt_at', received_at, 'lease_until', 0)
  if template ~= '' then
    redis.call('HSET', key, 'template', template)
  end
  redis.call('SADD', P .. 'destinations', destination)
  redis.call('ZADD', P .. 'queue:' .. destination, id, member)
  redis.call('ZADD', P .. 'all', id, member)
  redis.call('ZADD', P .. 'status:pending', id, member)
  local session_key = P .. 'session:' .. destination .. ':' .. session
  redis.call('ZADD', session_key, id, member)
  if redis.call('ZCARD', session_key) == 1 then
    -- The session's only unfinished delivery is its head: claimable from now on.
    redis.call('ZADD', P .. 'waiting:' .. destination, now, member)
  end
end
return 0

--[[ purge: delete history past retention, a bounded step at a time.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     before, limit
Returns  {deliveries deleted, events deleted}
         A delivery goes once it finished (sent or dead) before `before`. An event goes,
         oldest first, once it was received before `before` and has no delivery left; the
         first event that must stay ends the step. Ids come from counters and are never
         handed out again.
]]
local P = KEYS[1]
local before, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local deliveries = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. before,
    'LIMIT', 0, limit)) do
  local key = P .. 'd:' .. member
  local fields = redis.call('HMGET', key, 'status', 'event_ref', 'destination')
  redis.call('HINCRBY', P .. 'counts', fields[1] .. '\t' .. fields[3], -1)  -- see counts.lua
  redis.call('ZREM', P .. 'finished', member)
  redis.call('ZREM', P .. 'all', member)
  redis.call('ZREM', P .. 'status:' .. fields[1], member)
  redis.call('HINCRBY', P .. 'e:' .. fields[2], 'remaining', -1)
  local joined = P .. 'digest:' .. member
  for _, ref in ipairs(redis.call('LRANGE', joined, 1, -1)) do  -- [0] is its own event
    redis.call('HINCRBY', P .. 'e:' .. ref, 'remaining', -1)
  end
  redis.call('DEL', key, joined, P .. 'attempts:' .. member)
  deliveries = deliveries + 1
end
local events = 0
for _, ref in ipairs(redis.call('ZRANGE', P .. 'events', 0, limit - 1)) do
  local key = P .. 'e:' .. ref
  local fields = redis.call('HMGET', key, 'remaining', 'received_at')
  if tonumber(fields[1]) > 0 or tonumber(fields[2]) >= before then
    break
  end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'events', ref)
  events = events + 1
end
return {deliveries, events}

--[[ claim: take up to `limit` sendable deliveries of one destination for one process.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     destination, now, limit, owner, lease_until
Returns  an array, oldest due first, of {member, delivery fields (HGETALL), event_id, body}
Atomic:  a delivery is claimed by one owner at a time. `ready:<destination>` holds each
         session's head (its oldest unfinished delivery) scored by when it may be sent:
         its next attempt, or the end of the lease that holds it. So a head held by a live
         lease, and every later delivery of its session, is not claimable.
]]
local P = KEYS[1]
local destination, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local owner, lease_until = ARGV[4], ARGV[5]
local ready = P .. 'ready:' .. destination

local claimed = {}
local members = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(members) do
  local key = P .. 'd:' .. member
  local status = redis.call('HGET', key, 'status')
  local session = redis.call('HGET', key, 'session_key')
  local head = false
  if status == 'pending' or status == 'failed' then
    local first = redis.call('ZRANGE', P .. 'session:' .. destination .. ':' .. session, 0, 0)
    head = first[1] == member
  end
  if head then
    redis.call('HSET', key, 'claimed_by', owner, 'lease_until', lease_until)
    redis.call('ZADD', ready, lease_until, member)
    redis.call('SADD', P .. 'owner:' .. owner, member)
    local ref = redis.call('HGET', key, 'event_ref')
    local event = redis.call('HMGET', P .. 'e:' .. ref, 'event_id', 'body')
    claimed[#claimed + 1] = {member, redis.call('HGETALL', key), event[1], event[2]}
  else
    redis.call('ZREM', ready, member)  -- finished, or no longer its session's head
  end
end
return claimed

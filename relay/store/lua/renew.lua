--[[ renew: extend an owner's leases on the deliveries it is sending.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     owner, lease_until, then the members
Returns  the members the owner still holds (claimed by it and unfinished)
]]
local P = KEYS[1]
local owner, lease_until = ARGV[1], ARGV[2]
local held = {}
for i = 3, #ARGV do
  local member = ARGV[i]
  local key = P .. 'd:' .. member
  local fields = redis.call('HMGET', key, 'claimed_by', 'status', 'destination')
  if fields[1] == owner and (fields[2] == 'pending' or fields[2] == 'failed') then
    redis.call('HSET', key, 'lease_until', lease_until)
    redis.call('ZADD', P .. 'waiting:' .. fields[3], lease_until, member)
    redis.call('ZREM', P .. 'due:' .. fields[3], member)  -- held: not due until the lease ends
    held[#held + 1] = member
  end
end
redis.call('EXPIRE', P .. 'owner:' .. owner, 86400)  -- see lib_hold.lua
return held

--[[ release: give up every claim an owner holds on unfinished deliveries.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     owner
Returns  how many claims were given up; each such delivery is due again at its own next
         attempt time, for any process.
]]
local P = KEYS[1]
local owner = ARGV[1]
local owned = P .. 'owner:' .. owner
local released = 0
for _, member in ipairs(redis.call('SMEMBERS', owned)) do
  local key = P .. 'd:' .. member
  local fields = redis.call('HMGET', key, 'claimed_by', 'status', 'destination', 'next_attempt_at')
  if fields[1] == owner and (fields[2] == 'pending' or fields[2] == 'failed') then
    redis.call('HSET', key, 'claimed_by', '', 'lease_until', 0)
    redis.call('ZADD', P .. 'waiting:' .. fields[3], fields[4], member)
    redis.call('ZREM', P .. 'due:' .. fields[3], member)
    released = released + 1
  end
end
redis.call('DEL', owned)
return released

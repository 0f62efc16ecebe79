--[[ replay: put dead deliveries back in the queue, unclaimed and due now.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     now, then the members to replay; with none, up to 500 of the dead ones
Returns  how many were dead (and are now pending)
Atomic:  each keeps its id, so it goes out before later deliveries of its session.
]]
local P = KEYS[1]
local now = ARGV[1]
local members = {}
for i = 2, #ARGV do
  members[#members + 1] = ARGV[i]
end
if #members == 0 then
  members = redis.call('ZRANGE', P .. 'status:dead', 0, 499)
end
local replayed = 0
for _, member in ipairs(members) do
  local key = P .. 'd:' .. member
  local fields = redis.call('HMGET', key, 'status', 'destination', 'session_key')
  if fields[1] == 'dead' then
    local id = tonumber(member)
    local destination = fields[2]
    redis.call('HSET', key, 'status', 'pending', 'attempts', 0, 'next_attempt_at', now,
      'claimed_by', '', 'lease_until', 0)
    redis.call('HDEL', key, 'finished_at')
    redis.call('ZREM', P .. 'status:dead', member)
    redis.call('ZADD', P .. 'status:pending', id, member)
    redis.call('ZREM', P .. 'finished', member)
    redis.call('ZADD', P .. 'queue:' .. destination, id, member)
    local session_key = P .. 'session:' .. destination .. ':' .. fields[3]
    redis.call('ZADD', session_key, id, member)
    if redis.call('ZRANGE', session_key, 0, 0)[1] == member then
      redis.call('ZADD', P .. 'waiting:' .. destination, now, member)
    end
    replayed = replayed + 1
  end
end
return replayed

--[[ replay: put dead deliveries back in the queue, unclaimed and due now.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     now, 'ids', then the members to replay
         or now, 'dead', after, upto: the first 500 dead ones with after < id <= upto
Returns  {how many were dead (and are now pending), the last member looked at, or ''}
Atomic:  each keeps its id, so it goes out before later deliveries of its session, though
         not beside one of them being sent: then it is queued when that send's claim ends.
         Paging by id up to where it began, `relay replay --dead` replays what was dead
         then, once, even while workers dead-letter replayed ones again.
]]
local P = KEYS[1]
local now = ARGV[1]
local members = {}
if ARGV[2] == 'ids' then
  for i = 3, #ARGV do
    members[#members + 1] = ARGV[i]
  end
else
  members = redis.call('ZRANGEBYSCORE', P .. 'status:dead', '(' .. ARGV[3], ARGV[4],
    'LIMIT', 0, 500)
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
    redis.call('HINCRBY', P .. 'counts', 'dead\t' .. destination, -1)  -- see counts.lua
    redis.call('HINCRBY', P .. 'counts', 'pending\t' .. destination, 1)
    redis.call('ZREM', P .. 'finished', member)
    redis.call('ZADD', P .. 'queue:' .. destination, id, member)
    local session_key = P .. 'session:' .. destination .. ':' .. fields[3]
    redis.call('ZADD', session_key, id, member)
    if redis.call('ZRANGE', session_key, 0, 0)[1] == member
        and not sent_elsewhere(P, session_key, member, now) then  -- lib_head.lua
      redis.call('ZADD', P .. 'waiting:' .. destination, now, member)
    end
    replayed = replayed + 1
  end
end
return {replayed, members[#members] or ''}

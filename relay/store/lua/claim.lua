--[[ claim: take up to `limit` sendable deliveries of one destination for one process.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     destination, now, limit, owner, lease_until
Returns  {next_due, claimed...}: `claimed`, oldest first, each {member, delivery fields
         (HGETALL), event_id, body}; `next_due`, when nothing was claimed, when the
         destination's next head can be claimed (now while one is due, else the earliest
         score in `waiting:`), as text, and '' when nothing is queued or something was
         claimed. In the same call, so that a lane's empty look is one round trip.
Atomic:  a delivery is claimed by one owner at a time. Only a session's head (its oldest
         unfinished delivery) is ever queued, so a head held by a live lease holds back
         its whole session. A head waits in `waiting:<destination>`, scored by when it may
         be sent (its next attempt, or the end of the lease that holds it); once that time
         has come it moves to `due:<destination>`, scored by id, and is claimed oldest
         first, as the SQLite store does. A member is in one of the two at a time (renew,
         finish and release move it back to `waiting:`); and a head is claimed only if its
         next attempt and any lease on it have come, whichever set it was found in.
]]
local P = KEYS[1]
local destination, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local owner, lease_until = ARGV[4], ARGV[5]
local waiting, due = P .. 'waiting:' .. destination, P .. 'due:' .. destination

for _, member in ipairs(redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZADD', due, tonumber(member), member)
  redis.call('ZREM', waiting, member)
end

local function session_key_of(session)
  return P .. 'session:' .. destination .. ':' .. session
end

-- Queue a passed-over delivery's session head, into `due` at once if it may go now.
local function queue_for(session_key)
  local first = redis.call('ZRANGE', session_key, 0, 0)[1]
  if not first or sent_elsewhere(P, session_key, first, now) then
    return
  end
  queue_head(P, destination, session_key)
  local at = redis.call('ZSCORE', waiting, first)
  if at and tonumber(at) <= now then
    redis.call('ZREM', waiting, first)
    redis.call('ZADD', due, tonumber(first), first)
  end
end

local claimed = {}
while #claimed < limit do
  local member = redis.call('ZRANGE', due, 0, 0)[1]
  if not member then
    break
  end
  local key = P .. 'd:' .. member
  local fields = redis.call('HMGET', key, 'status', 'session_key', 'next_attempt_at',
    'lease_until')
  local unfinished = fields[1] == 'pending' or fields[1] == 'failed'
  local head = unfinished and redis.call('ZRANGE', session_key_of(fields[2]), 0, 0)[1] == member
  redis.call('ZREM', due, member)  -- claimed now, or finished, or no longer a head
  local sendable_at = math.max(tonumber(fields[3]) or 0, tonumber(fields[4]) or 0)
  if unfinished and not head then
    -- Passed over: a delivery replayed went back before it, and waited while this one
    -- was sent (lib_head.lua). Its claim has ended: the head goes in its place.
    queue_for(session_key_of(fields[2]))
  elseif head and sendable_at > now then
    redis.call('ZADD', waiting, sendable_at, member)  -- not yet: back to wait its turn
  elseif head then
    hold(P, destination, member, owner, lease_until)  -- lib_hold.lua
    local ref = redis.call('HGET', key, 'event_ref')
    local event = redis.call('HMGET', P .. 'e:' .. ref, 'event_id', 'body')
    claimed[#claimed + 1] = {member, redis.call('HGETALL', key), event[1], event[2]}
  end
end

local next_due = ''
if #claimed == 0 then
  if redis.call('ZCARD', due) > 0 then
    next_due = ARGV[2]
  else
    local first = redis.call('ZRANGE', waiting, 0, 0, 'WITHSCORES')
    if first[2] then
      next_due = first[2]
    end
  end
end
table.insert(claimed, 1, next_due)
return claimed

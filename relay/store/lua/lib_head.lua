--[[ lib_head: queue a session's head; tell whether one of its deliveries is being sent.

Not a script of its own: redis.py prepends it to claim.lua, finish.lua and replay.lua.

queue_head(P, destination, session_key)
  Puts the session's head (its oldest unfinished delivery) in `waiting:<destination>`,
  scored by when it may be sent (its next attempt, or the end of a lease on it), unless it
  is in `due:<destination>` already. Returns the head, or nil when the session has none.

sent_elsewhere(P, session_key, member, now)
  Whether a delivery of the session other than `member` is held by a live lease: one being
  sent. A dead delivery replayed goes back before the later ones of its session, which
  went on without it, but not beside the one being sent: it waits, and when that one's
  claim ends (finish, release, or a claim that finds its lease run out) the session's head
  is queued. Reads the session's unfinished deliveries: only a replay and a claim that
  finds a head passed over call it.
]]
local function queue_head(P, destination, session_key)
  local head = redis.call('ZRANGE', session_key, 0, 0)[1]
  if head and not redis.call('ZSCORE', P .. 'due:' .. destination, head) then
    local times = redis.call('HMGET', P .. 'd:' .. head, 'next_attempt_at', 'lease_until')
    local at = math.max(tonumber(times[1]) or 0, tonumber(times[2]) or 0)
    redis.call('ZADD', P .. 'waiting:' .. destination, at, head)
  end
  return head
end

local function sent_elsewhere(P, session_key, member, now)
  for _, other in ipairs(redis.call('ZRANGE', session_key, 0, -1)) do
    if other ~= member then
      local hold = redis.call('HMGET', P .. 'd:' .. other, 'claimed_by', 'lease_until')
      if hold[1] and hold[1] ~= '' and (tonumber(hold[2]) or 0) > tonumber(now) then
        return true
      end
    end
  end
  return false
end

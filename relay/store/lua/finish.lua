--[[ finish: record the outcome of an attempt by the process that holds the claim.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     member, owner, outcome ('sent', 'dead' or 'failed'), now, text ('' for none: the
         note of a send, the error of a failure), retry_at ('' unless 'failed'),
         started_at (when the attempt began), kept (how many attempts a delivery keeps)
Returns  1 when recorded, 0 (nothing changed) when the owner no longer holds the claim;
         2 when a send is recorded and nothing else of its destination is queued (every
         unfinished delivery left is one the owner holds under a live lease: its other
         sends in flight), so that its lane need not look again (Store.record_sent)
Atomic:  the outcome, the attempt's record, the release of the claim and the session's
         next head go together: once a delivery is finished, its session's next delivery
         becomes claimable.
]]
local P = KEYS[1]
local OWN_LOOKED = 64  -- see the end
local member, owner, outcome, now, text = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local started_at, kept = ARGV[7], tonumber(ARGV[8])
local key = P .. 'd:' .. member
local fields = redis.call('HMGET', key, 'claimed_by', 'status', 'destination', 'session_key')
local status, destination, session = fields[2], fields[3], fields[4]
if fields[1] ~= owner or (status ~= 'pending' and status ~= 'failed') then
  return 0
end
local id = tonumber(member)
local waiting = P .. 'waiting:' .. destination
redis.call('HINCRBY', key, 'attempts', 1)
-- The attempt, as "number TAB started_at TAB duration TAB outcome TAB text": numbered on
-- across replays (which reset `attempts`), the latest `kept` of them kept.
local number = redis.call('HINCRBY', key, 'tries', 1)
local took = math.max(tonumber(now) - tonumber(started_at), 0)
local shown = outcome == 'failed' and 'retried' or outcome
local attempts = P .. 'attempts:' .. member
redis.call('RPUSH', attempts, number .. '\t' .. started_at .. '\t' .. string.format('%.6f', took)
  .. '\t' .. shown .. '\t' .. text)
redis.call('LTRIM', attempts, -kept, -1)
redis.call('HSET', key, 'claimed_by', '', 'lease_until', 0, 'status', outcome)
redis.call('SREM', P .. 'owner:' .. owner, member)
redis.call('ZREM', P .. 'status:' .. status, member)
redis.call('ZADD', P .. 'status:' .. outcome, id, member)
if outcome ~= status then  -- see counts.lua
  redis.call('HINCRBY', P .. 'counts', status .. '\t' .. destination, -1)
  redis.call('HINCRBY', P .. 'counts', outcome .. '\t' .. destination, 1)
end
if text == '' then
  redis.call('HDEL', key, 'last_error')
else
  redis.call('HSET', key, 'last_error', text)
end

local session_key = P .. 'session:' .. destination .. ':' .. session
if outcome == 'failed' then
  redis.call('HSET', key, 'next_attempt_at', ARGV[6])
  redis.call('ZREM', waiting, member)
  redis.call('ZREM', P .. 'due:' .. destination, member)
  -- Its session's head: itself, waiting for its retry, or a delivery replayed meanwhile,
  -- which went back before it and goes next (lib_head.lua).
  queue_head(P, destination, session_key)
  return 1
end

redis.call('HSET', key, 'finished_at', now)
redis.call('ZADD', P .. 'finished', now, member)
redis.call('ZREM', P .. 'queue:' .. destination, member)
redis.call('ZREM', waiting, member)
redis.call('ZREM', P .. 'due:' .. destination, member)
redis.call('ZREM', session_key, member)
if queue_head(P, destination, session_key) then
  return 1
end
if outcome ~= 'sent' then  -- dead: the answer is a failure's
  return 1
end
-- Anything else queued? The destination's unfinished deliveries, past the owner's own
-- sends in flight; beyond OWN_LOOKED of them, say yes rather than read on.
local queued = redis.call('ZRANGE', P .. 'queue:' .. destination, 0, OWN_LOOKED)
for _, other in ipairs(queued) do
  local held = redis.call('HMGET', P .. 'd:' .. other, 'claimed_by', 'lease_until')
  if held[1] ~= owner or tonumber(held[2]) <= tonumber(now) then
    return 1
  end
end
if #queued > OWN_LOOKED then
  return 1
end
return 2

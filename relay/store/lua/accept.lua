--[[ accept: store an event, its deliveries and its dedupe key, or nothing (a duplicate).

KEYS[1]  the store's key prefix, with its hash tag: every key below starts with it, so the
         whole store lives in one cluster slot.
ARGV     event_id, body, received_at, dedupe_window_s, count,
         then count times: destination, rule, template ('' for none), session_key,
         digest_s ('' for none: a delivery of its own)
Returns  1 when the event id was accepted within its dedupe window (nothing stored), else 0.
         An event joining an open digest adds no delivery; its `remaining` counts it all
         the same, so the purge keeps it until the digest is gone.
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

local function open_digest(destination, rule, session)
  -- A session's digest of this rule and destination is open until its window closes,
  -- and while nobody has claimed it.
  local open_key = P .. 'digest-open:' .. destination .. ':' .. rule .. ':' .. session
  local member = redis.call('GET', open_key)
  if not member then
    return nil, open_key
  end
  local fields = redis.call('HMGET', P .. 'd:' .. member, 'status', 'digest_until', 'claimed_by')
  if fields[1] == 'pending' and tonumber(fields[2]) > now and (fields[3] or '') == '' then
    return member, open_key
  end
  return nil, open_key
end

for i = 0, count - 1 do
  local destination, rule = ARGV[6 + 5 * i], ARGV[7 + 5 * i]
  local template, session, digest_s = ARGV[8 + 5 * i], ARGV[9 + 5 * i], ARGV[10 + 5 * i]
  local joined, open_key = nil, nil
  if digest_s ~= '' then
    joined, open_key = open_digest(destination, rule, session)
  end
  if joined then
    redis.call('RPUSH', P .. 'digest:' .. joined, ref)
  else
    local id = redis.call('INCR', P .. 'dseq')
    local member = string.format('%016d', id)
    local key = P .. 'd:' .. member
    local due = received_at
    redis.call('HSET', key, 'event_ref', ref, 'destination', destination, 'rule', rule,
      'session_key', session, 'status', 'pending', 'attempts', 0,
      'created_at', received_at, 'lease_until', 0)
    if template ~= '' then
      redis.call('HSET', key, 'template', template)
    end
    if digest_s ~= '' then
      due = string.format('%.17g', now + tonumber(digest_s))
      redis.call('HSET', key, 'digest_until', due)
      redis.call('RPUSH', P .. 'digest:' .. member, ref)
      redis.call('SET', open_key, member, 'PX', math.floor(tonumber(digest_s) * 1000) + 60000)
    end
    redis.call('HSET', key, 'next_attempt_at', due)
    redis.call('SADD', P .. 'destinations', destination)
    redis.call('ZADD', P .. 'queue:' .. destination, id, member)
    redis.call('ZADD', P .. 'all', id, member)
    redis.call('ZADD', P .. 'status:pending', id, member)
    local session_key = P .. 'session:' .. destination .. ':' .. session
    redis.call('ZADD', session_key, id, member)
    if redis.call('ZCARD', session_key) == 1 then
      -- The session's only unfinished delivery is its head: claimable once it is due.
      redis.call('ZADD', P .. 'waiting:' .. destination, due, member)
    end
  end
end
return 0

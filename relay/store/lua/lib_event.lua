--[[ lib_event: store an accepted event, its deliveries and its dedupe key.

Not a script of its own: redis.py prepends it to the scripts that store events (accept,
watch), so the logic is written once.

store_event(P, at)
  P        the store's key prefix (KEYS[1])
  at       where the event's arguments begin in ARGV: event_id, body, received_at,
           dedupe_window_s, request (what mattered of the request that brought it in,
           RequestRecord's JSON; '' for none: kept as no field), conversation (the digest
           naming its conversation's watch, whose transcript lists it: conv:<digest>, a list
           of event refs, forgotten with the watch; '' for none), count, then count times:
           destination, rule, template ('' for none), session_key, digest_s ('' for
           none: a delivery of its own)
  Returns  true when the event id was accepted within its dedupe window (nothing stored),
           else false; where the arguments after the deliveries begin; and the new
           deliveries that are their session's head at their destination (the claimable
           ones: not a digest's), each {member, destination, its place among the event's
           deliveries from 0}, in order.
           An event joining an open digest adds no delivery; its `remaining` counts it all
           the same, so the purge keeps it until the digest is gone.
]]
local function open_digest(P, now, destination, rule, session)
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

local function store_event(P, at)
  local event_id, body, received_at = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local now, window = tonumber(received_at), tonumber(ARGV[at + 3])
  local request, conversation = ARGV[at + 4], ARGV[at + 5]
  local count = tonumber(ARGV[at + 6])
  local first = at + 7  -- the first delivery's arguments
  local after = first + 5 * count

  local dedupe = P .. 'dedupe:' .. event_id
  local expires = redis.call('GET', dedupe)
  if expires and tonumber(expires) > now then
    return true, after, {}
  end
  -- The window is kept in relay's time (the value); the TTL, in Redis's, only cleans up.
  redis.call('SET', dedupe, string.format('%.17g', now + window),
    'PX', math.floor(window * 1000) + 3600000)

  local ref = redis.call('INCR', P .. 'eseq')
  -- The event's hash is written once, after its deliveries, with what they tell of it.
  local fields = {'event_id', event_id, 'body', body, 'received_at', received_at,
    'remaining', count}
  if request ~= '' then
    fields[#fields + 1], fields[#fields + 2] = 'request', request
  end
  redis.call('ZADD', P .. 'events', ref, ref)
  if conversation ~= '' then
    redis.call('RPUSH', P .. 'conv:' .. conversation, ref)
  end
  local members = {}  -- the deliveries it is part of, for its transcript
  local heads = {}

  for i = first, after - 1, 5 do
    local destination, rule = ARGV[i], ARGV[i + 1]
    local template, session, digest_s = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local joined, open_key = nil, nil
    if digest_s ~= '' then
      joined, open_key = open_digest(P, now, destination, rule, session)
    end
    if joined then
      redis.call('RPUSH', P .. 'digest:' .. joined, ref)
      members[#members + 1] = joined
    else
      local id = redis.call('INCR', P .. 'dseq')
      local member = string.format('%016d', id)
      members[#members + 1] = member
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
      redis.call('HINCRBY', P .. 'counts', 'pending\t' .. destination, 1)  -- see counts.lua
      local session_key = P .. 'session:' .. destination .. ':' .. session
      redis.call('ZADD', session_key, id, member)
      if redis.call('ZCARD', session_key) == 1 then
        -- The session's only unfinished delivery is its head: claimable once it is due.
        redis.call('ZADD', P .. 'waiting:' .. destination, due, member)
        if digest_s == '' then
          heads[#heads + 1] = {member, destination, (i - first) / 5}
        end
      end
    end
  end
  if conversation ~= '' and #members > 0 then
    fields[#fields + 1], fields[#fields + 2] = 'deliveries', table.concat(members, ',')
  end
  redis.call('HSET', P .. 'e:' .. ref, unpack(fields))
  return false, after, heads
end

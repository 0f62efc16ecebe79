--[[ threads: a conversation's thread at each destination (SPEC 4.2: thread: session).

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     'start', destination, conversation, value, now
         or 'replace', destination, conversation, value, now
         or 'count', destination, conversation, now
         or 'purge', before, limit
Returns  for 'start', the thread the conversation has now (the first one kept wins);
         for 'replace', the new value;
         for 'count', how many messages the thread has now, or 0 when it has none;
         for 'purge', how many threads went
Keys     threads:<dest> (hash: conversation -> value), thread-messages:<dest> (hash:
         conversation -> count), thread-activity:<dest> (zset: conversation by its last
         message), thread-destinations (set of <dest> with threads).
         A thread goes (purge) once its conversation has had no message since `before`,
         quietest first, at most `limit` in one call.
]]
local P = KEYS[1]
local op = ARGV[1]

local function keys_of(destination)
  return P .. 'threads:' .. destination, P .. 'thread-messages:' .. destination,
    P .. 'thread-activity:' .. destination
end

if op == 'purge' then
  local before, limit = ARGV[2], tonumber(ARGV[3])
  local gone = 0
  for _, destination in ipairs(redis.call('SMEMBERS', P .. 'thread-destinations')) do
    local threads, counts, activity = keys_of(destination)
    local quiet = redis.call('ZRANGEBYSCORE', activity, '-inf', '(' .. before,
      'LIMIT', 0, limit - gone)
    if #quiet > 0 then
      redis.call('HDEL', threads, unpack(quiet))
      redis.call('HDEL', counts, unpack(quiet))
      redis.call('ZREM', activity, unpack(quiet))
      gone = gone + #quiet
    end
    if redis.call('EXISTS', threads) == 0 then
      redis.call('SREM', P .. 'thread-destinations', destination)
    end
    if gone >= limit then
      break
    end
  end
  return gone
end

local destination, conversation = ARGV[2], ARGV[3]
local threads, counts, activity = keys_of(destination)

if op == 'count' then
  if redis.call('HEXISTS', threads, conversation) == 0 then
    return 0
  end
  redis.call('ZADD', activity, 'GT', ARGV[4], conversation)
  return redis.call('HINCRBY', counts, conversation, 1)
end

local value, now = ARGV[4], ARGV[5]
if op == 'replace' then
  redis.call('HSET', threads, conversation, value)
  redis.call('HSET', counts, conversation, 1)
elseif redis.call('HSETNX', threads, conversation, value) == 1 then  -- 'start'
  redis.call('HSET', counts, conversation, 1)
end
redis.call('ZADD', activity, 'GT', now, conversation)
redis.call('SADD', P .. 'thread-destinations', destination)
return redis.call('HGET', threads, conversation)

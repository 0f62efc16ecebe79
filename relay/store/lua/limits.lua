--[[ limits: the shared pace and 429 pause of one rate-limited target.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     'reserve', key, now, rate_per_s ('' when not paced), burst
         or 'pause', key, until
Returns  for 'reserve', as a string: 0 when the caller may send now (a token was taken),
         else how many seconds to wait (a pause, or an empty bucket; nothing taken);
         for 'pause', 0
Atomic:  two processes cannot both take the last token. The bucket arithmetic is
         relay/limits.py's take_token.
]]
local P = KEYS[1]
local key = P .. 'limit:' .. ARGV[2]
local KEEP_S = 86400  -- an idle target's state goes after a day

if ARGV[1] == 'pause' then
  local until_ = tonumber(ARGV[3])
  local current = tonumber(redis.call('HGET', key, 'paused_until') or '0')
  if until_ > current then
    redis.call('HSET', key, 'paused_until', ARGV[3])
  end
  redis.call('EXPIRE', key, KEEP_S)
  return '0'
end

local now = tonumber(ARGV[3])
local paused_until = tonumber(redis.call('HGET', key, 'paused_until') or '0')
if paused_until > now then
  return tostring(paused_until - now)
end
if ARGV[4] == '' then
  return '0'
end
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', key, 'tokens', 'updated')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if not tokens or not updated then
  tokens, updated = burst, now
end
tokens = math.min(burst, tokens + math.max(now - updated, 0) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'updated', ARGV[3])
redis.call('EXPIRE', key, KEEP_S)
return string.format('%.17g', wait)

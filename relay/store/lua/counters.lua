--[[ counters: roll the activity counters of hours before yesterday up into days (SPEC 8.1).

KEYS[1]  the store's key prefix (see accept.lua); the keys are lib_tally.lua's, and
         counters-day:<day>  hash: a day's counters (day: the hour // 24), the same fields
                             as an hour's ('…\tlast' the latest of the day's), kept as long
                             as the longest-kept of its hours
         counter-days        zset: the days that have a counters-day hash (score: the day)
ARGV     before_hour (hours before it are rolled up: yesterday's first), limit (hours)
Returns  how many hours were rolled up (fewer than limit: none is left)
Atomic:  an hour's counters move into its day's whole, in one step; an event accepted
         later for an hour already rolled up (a replica's clock behind) makes the hour
         again, and the next call adds it to the day too.
]]
local P = KEYS[1]
local hours = redis.call('ZRANGEBYSCORE', P .. 'counter-hours', '-inf', '(' .. ARGV[1],
  'LIMIT', 0, tonumber(ARGV[2]))
for _, hour in ipairs(hours) do
  local key = P .. 'counters:' .. hour
  local flat = redis.call('HGETALL', key)
  if #flat > 0 then
    local day = math.floor(tonumber(hour) / 24)
    local day_key = P .. 'counters-day:' .. day
    for i = 1, #flat, 2 do
      local field, value = flat[i], flat[i + 1]
      if string.sub(field, -5) == '\tlast' then
        local known = redis.call('HGET', day_key, field)
        if not known or tonumber(known) < tonumber(value) then
          redis.call('HSET', day_key, field, value)
        end
      else
        redis.call('HINCRBY', day_key, field, tonumber(value))
      end
    end
    local keep = redis.call('PTTL', key)
    if keep > 0 and keep > redis.call('PTTL', day_key) then
      redis.call('PEXPIRE', day_key, keep)
    end
    redis.call('ZADD', P .. 'counter-days', day, day)
    redis.call('DEL', key)
  end
  redis.call('ZREM', P .. 'counter-hours', hour)
end
return #hours

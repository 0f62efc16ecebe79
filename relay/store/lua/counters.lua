--[[ counters: roll the activity counters of hours before yesterday up into days, and sum
them for a period (SPEC 8.1).

KEYS[1]  the store's key prefix (see accept.lua); the keys are lib_tally.lua's (prepended
         to this script), and
         counters-day:<day>  hash: a day's counters (day: the hour // 24), the same fields
                             as an hour's ('…\tlast' the latest of the day's; an agent's
                             counters always one 'counts\t' map), kept as long as the
                             longest-kept of its hours
         counter-days        zset: the days that have a counters-day hash (score: the day)
ARGV     'roll_up', before_hour (hours before it are rolled up: yesterday's first), limit
         or 'agents', since_hour
         or 'hourly', since_hour, counter
         or 'activity', since_hour, counter: 'agents' and 'hourly' in one read
         or 'rules', since_hour
Returns  for 'roll_up', how many hours were rolled up (fewer than limit: none is left);
         for 'agents', each agent's id then its counters summed over the period, one
         number per AGENT_COUNTERS (lib_tally.lua), in its order; for 'hourly', each
         hour's (a day's first hour for a day) and the counter's sum over every agent
         then; for 'activity', the two of them; for 'rules', each rule's name, its hits
         in the period and its latest match of all kept. A period is the hours from
         since_hour on and the days that overlap it (whole). Summed here, in Redis, so that
         a page gets a few hundred numbers, not every hour's every field.
         An hour an older relay wrote holds a field per agent counter
         ('agent\t<agent id>\t<counter>', lib_tally.lua): read and rolled up the same.
Atomic:  an hour's counters move into its day's whole, in one step; an event accepted
         later for an hour already rolled up (a replica's clock behind) makes the hour
         again, and the next call adds it to the day too.
]]
local P = KEYS[1]
local op = ARGV[1]

-- Each kept hash of the period (or of all kept, with `all`): its fields, its first hour,
-- and whether it is within the period. One whose hash expired leaves its index.
local function units(since, all)
  local found = {}
  local function read(index, name, first, hours)
    for _, unit in ipairs(redis.call('ZRANGEBYSCORE', P .. index, first, '+inf')) do
      local flat = redis.call('HGETALL', P .. name .. ':' .. unit)
      local start = tonumber(unit) * hours
      if #flat == 0 then
        redis.call('ZREM', P .. index, unit)
      else
        found[#found + 1] = {flat, start, start + hours > since}
      end
    end
  end
  read('counter-days', 'counters-day', all and '-inf' or tostring(math.floor(since / 24)), 24)
  read('counter-hours', 'counters', all and '-inf' or tostring(since), 1)
  return found
end

local function flatten(sums)
  local out = {}
  for key, value in pairs(sums) do
    out[#out + 1] = key
    out[#out + 1] = value
  end
  return out
end

-- Each agent's counters in a unit's fields (flat, from HGETALL): calls found(agent, counts)
-- with a map of place -> count (lib_tally.lua's counts_add) for each agent's map, and for
-- each counter of an older relay's field.
local function agent_fields(flat, found)
  for i = 1, #flat, 2 do
    local field = flat[i]
    if string.sub(field, 1, 7) == 'counts\t' then
      found(string.sub(field, 8), cmsgpack.unpack(flat[i + 1]))
    elseif string.sub(field, 1, 6) == 'agent\t' then
      -- An agent id may hold a tab; a counter's name does not.
      local agent, name = string.match(field, '^agent\t(.*)\t([^\t]*)$')
      found(agent, {[counter_place(name)] = tonumber(flat[i + 1])})
    end
  end
end

-- Add an agent's counts (place -> count) to its totals in `totals`, made on first sight
-- and listed in `agents` in that order.
local function add_counts(totals, agents, agent, counts)
  local own = totals[agent]
  if not own then
    own = {}
    totals[agent] = own
    agents[#agents + 1] = agent
  end
  for place, n in pairs(counts) do
    own[place] = (own[place] or 0) + n
  end
end

-- Each agent's counters summed over the units (flat: each agent's id, then its counters in
-- AGENT_COUNTERS' order), and, for the counter at place `wanted` (when given), its sum over
-- every agent by the units' first hours.
local function sums_of(unit_list, wanted)
  local sums, agents, hourly = {}, {}, {}
  for _, unit in ipairs(unit_list) do
    local start = unit[2]
    agent_fields(unit[1], function(agent, counts)
      add_counts(sums, agents, agent, counts)
      if wanted then
        hourly[start] = (hourly[start] or 0) + (counts[wanted] or 0)
      end
    end)
  end
  local out = {}
  for _, agent in ipairs(agents) do
    out[#out + 1] = agent
    local own = sums[agent]
    for i = 1, #AGENT_COUNTERS do
      out[#out + 1] = own[i] or 0
    end
  end
  return out, flatten(hourly)
end

if op == 'agents' then
  return (sums_of(units(tonumber(ARGV[2]), false), nil))
end

if op == 'hourly' then
  local _, hourly = sums_of(units(tonumber(ARGV[2]), false), counter_place(ARGV[3]))
  return hourly
end

if op == 'activity' then
  local agents, hourly = sums_of(units(tonumber(ARGV[2]), false), counter_place(ARGV[3]))
  return {agents, hourly}
end

if op == 'rules' then
  local since = tonumber(ARGV[2])
  local hits, last = {}, {}
  for _, unit in ipairs(units(since, true)) do
    local flat = unit[1]
    for i = 1, #flat, 2 do
      local field, value = flat[i], flat[i + 1]
      if string.sub(field, 1, 5) == 'rule\t' then
        if string.sub(field, -5) == '\thits' then
          local rule = string.sub(field, 6, -6)
          hits[rule] = (hits[rule] or 0) + (unit[3] and tonumber(value) or 0)
        else
          local rule = string.sub(field, 6, -6)
          if not last[rule] or tonumber(last[rule]) < tonumber(value) then
            last[rule] = value
          end
        end
      end
    end
  end
  local out = {}
  for rule, at in pairs(last) do
    out[#out + 1] = rule
    out[#out + 1] = hits[rule] or 0
    out[#out + 1] = at
  end
  return out
end

-- 'roll_up'
local hours = redis.call('ZRANGEBYSCORE', P .. 'counter-hours', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, tonumber(ARGV[3]))
for _, hour in ipairs(hours) do
  local key = P .. 'counters:' .. hour
  local flat = redis.call('HGETALL', key)
  if #flat > 0 then
    local day = math.floor(tonumber(hour) / 24)
    local day_key = P .. 'counters-day:' .. day
    for i = 1, #flat, 2 do
      local field, value = flat[i], flat[i + 1]
      if string.sub(field, 1, 5) == 'rule\t' then
        if string.sub(field, -5) == '\tlast' then
          local known = redis.call('HGET', day_key, field)
          if not known or tonumber(known) < tonumber(value) then
            redis.call('HSET', day_key, field, value)
          end
        else
          redis.call('HINCRBY', day_key, field, tonumber(value))
        end
      end
    end
    -- Each agent's counters of the hour, whichever relay wrote them, into its day's map.
    local adds, agents = {}, {}
    agent_fields(flat, function(agent, counts)
      add_counts(adds, agents, agent, counts)
    end)
    for _, agent in ipairs(agents) do
      counts_add(day_key, 'counts\t' .. agent, adds[agent])
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

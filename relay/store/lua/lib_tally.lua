--[[ lib_tally: add an accepted event's tally to the activity counters (SPEC 8.1).

Not a script of its own: redis.py prepends it to the scripts that store events (accept,
watch) and to counters.lua. relay/activity/tally.py says what a tally is;
relay/store/sqlite_counters.py keeps the same counters in SQLite.

Keys     counters:<hour>  hash, one per hour that has counters (hour: received_at // 3600):
                          'counts\t<agent id>' -> the agent's counters of the hour, one
                          MessagePack map (cmsgpack) from a counter's place in
                          AGENT_COUNTERS to its count, for the counters above zero,
                          'rule\t<rule name>\thits' -> count (name '' : no rule matched),
                          'rule\t<rule name>\tlast' -> its latest match in the hour.
                          It expires console.history after its hour, counted from when it
                          was made (a TTL: relay's clock and Redis's need not agree).
         counter-hours    zset: the hours that have a counters hash (score: the hour), so
                          that a reader finds them without a SCAN.

An agent's counters are one field, not a field each: a page sums every agent's field of
every hour and day of its period, and with every agent busy every hour that is about
twenty times fewer fields to read. An older relay kept a field per counter,
'agent\t<agent id>\t<counter>' -> count; counters.lua reads and rolls up both, so hours
it wrote, and those it writes beside this one during a rolling upgrade, still count.

tally_add(P, at, more): ARGV from `at`: hour, keep_s (how long after the event its hour's
counters are kept), received_at, agent_id, n, n counter names, m, m rule names; `more`,
the agent counters its conversation's watch adds (lib_watch.lua), counted the same.
]]

-- relay/activity/tally.py's FIRST_ANSWER_BOUNDS_S (tests/store/test_watch_upgrades.py
-- holds them equal), and its first_answer_counter.
local FIRST_ANSWER_BOUNDS_S = {1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600,
  1800, 3600}

local function first_answer_counter(seconds)
  for _, bound in ipairs(FIRST_ANSWER_BOUNDS_S) do
    if seconds <= bound then
      return 'first_answer_le_' .. bound
    end
  end
  return 'first_answer_over'
end

-- relay/activity/tally.py's AGENT_COUNTERS, in its order (the same test holds them equal),
-- and each one's place, its key in an agent's map.
local AGENT_COUNTERS = {'events', 'visitor_messages', 'agent_messages', 'conversations',
  'unanswered'}
for _, bound in ipairs(FIRST_ANSWER_BOUNDS_S) do
  AGENT_COUNTERS[#AGENT_COUNTERS + 1] = 'first_answer_le_' .. bound
end
AGENT_COUNTERS[#AGENT_COUNTERS + 1] = 'first_answer_over'
local COUNTER_PLACE = {}
for i, name in ipairs(AGENT_COUNTERS) do
  COUNTER_PLACE[name] = i
end

-- The place of an agent counter; an unknown name is an error.
local function counter_place(name)
  local place = COUNTER_PLACE[name]
  if not place then
    error('unknown agent counter ' .. name)
  end
  return place
end

-- Add `adds` (place -> count) to the agent's map in field `field` of hash `key`. Only
-- the counters above zero are kept (an agent's hour has a few of them): a page goes through
-- every agent's map of its period, and a map of four reads faster than an array of 23.
local function counts_add(key, field, adds)
  local packed = redis.call('HGET', key, field)
  local counts = packed and cmsgpack.unpack(packed) or {}
  for place, n in pairs(adds) do
    counts[place] = (counts[place] or 0) + n
  end
  redis.call('HSET', key, field, cmsgpack.pack(counts))
end

local function tally_add(P, at, more)
  local hour, keep_s, received_at, agent_id = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local key = P .. 'counters:' .. hour
  -- EXISTS is only read: unlike setting the TTL on every event, it is not written to the AOF.
  local new = redis.call('EXISTS', key) == 0
  local n = tonumber(ARGV[at + 4])
  local adds = {}
  for i = at + 5, at + 4 + n do
    local place = counter_place(ARGV[i])
    adds[place] = (adds[place] or 0) + 1
  end
  for _, name in ipairs(more) do
    local place = counter_place(name)
    adds[place] = (adds[place] or 0) + 1
  end
  if next(adds) then
    counts_add(key, 'counts\t' .. agent_id, adds)
  end
  local m_at = at + 5 + n
  for i = m_at + 1, m_at + tonumber(ARGV[m_at]) do
    redis.call('HINCRBY', key, 'rule\t' .. ARGV[i] .. '\thits', 1)
    local last_field = 'rule\t' .. ARGV[i] .. '\tlast'
    local last = redis.call('HGET', key, last_field)
    if not last or tonumber(last) < tonumber(received_at) then
      redis.call('HSET', key, last_field, received_at)
    end
  end
  if new then
    redis.call('EXPIRE', key, math.ceil(tonumber(keep_s)))
    redis.call('ZADD', P .. 'counter-hours', hour, hour)
  end
end

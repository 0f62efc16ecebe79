--[[ counts: count a store's deliveries by status and destination, once.

KEYS[1]  the store's key prefix (see accept.lua)
ARGV     (none)
Returns  1 when it counted, 0 when the counts were already kept
         The hash `counts` holds, for each "STATUS<TAB>DESTINATION", how many deliveries
         there are; accept, finish, replay and purge keep it as they change a delivery's
         status, so the console reads counts in O(1). A store written before relay kept
         them is counted here when relay opens it: atomically, so a delivery accepted at
         the same moment is counted once, here or by accept.
]]
local P = KEYS[1]
if redis.call('EXISTS', P .. 'counts-kept') == 1 then
  return 0
end
redis.call('DEL', P .. 'counts')
for _, member in ipairs(redis.call('ZRANGE', P .. 'all', 0, -1)) do
  local fields = redis.call('HMGET', P .. 'd:' .. member, 'status', 'destination')
  if fields[1] then
    redis.call('HINCRBY', P .. 'counts', fields[1] .. '\t' .. fields[2], 1)
  end
end
redis.call('SET', P .. 'counts-kept', 1)
return 1

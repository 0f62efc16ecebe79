--[[ accept: store an event, its deliveries and its dedupe key, and move its conversation's
watch on; or nothing (a duplicate).

KEYS[1]  the store's key prefix, with its hash tag: every key below starts with it, so the
         whole store lives in one cluster slot.
ARGV     the event and its deliveries as lib_event.lua's store_event takes them:
         event_id, body, received_at, dedupe_window_s, request ('' for none), conversation
         ('' for none), count, then
         count times: destination, rule, template ('' for none), session_key, digest_s
         ('' for none: a delivery of its own);
         then 'claim', owner, lease_until, n and n destinations, only when the accept
         claims for its own process (ClaimAtAccept): the first new delivery to each of
         them that is its session's head is held for the owner (lib_hold.lua), as
         claim.lua would;
         then 'watch' and its watch's arguments as lib_watch.lua's watch_observe takes
         them, only when the event tells its conversation something (an Observation);
         then 'tally' and its tally's arguments as lib_tally.lua's tally_add takes them,
         only when relay keeps activity counters
Returns  {1} when the event id was accepted within its dedupe window (nothing stored, the
         watch untouched), else {0, then for each delivery claimed: its member and its place
         among the event's deliveries from 0}.
Atomic:  the dedupe check, the event, every delivery and its claim, the watch and the
         counters go in together or not at all.
]]
local P = KEYS[1]
local duplicate, after, heads = store_event(P, 1)
if duplicate then
  return {1}
end
local answer = {0}
if ARGV[after] == 'claim' then
  local owner, lease_until, n = ARGV[after + 1], ARGV[after + 2], tonumber(ARGV[after + 3])
  local wanted = {}
  for i = after + 4, after + 3 + n do
    wanted[ARGV[i]] = true
  end
  after = after + 4 + n
  for _, head in ipairs(heads) do
    local member, destination = head[1], head[2]
    if wanted[destination] then
      wanted[destination] = nil  -- one a destination: its lane reserved one slot
      hold(P, destination, member, owner, lease_until)
      answer[#answer + 1] = member
      answer[#answer + 1] = head[3]
    end
  end
end
local more = {}
if ARGV[after] == 'watch' then
  more = watch_observe(P, after + 1, ARGV[after + 11] == 'tally')
  after = after + 11
end
if ARGV[after] == 'tally' then
  tally_add(P, after + 1, more)
end
return answer

--[[ accept: store an event, its deliveries and its dedupe key, and move its conversation's
watch on; or nothing (a duplicate).

KEYS[1]  the store's key prefix, with its hash tag: every key below starts with it, so the
         whole store lives in one cluster slot.
ARGV     the event and its deliveries as lib_event.lua's store_event takes them:
         event_id, body, received_at, dedupe_window_s, request ('' for none), count, then
         count times: destination, rule, template ('' for none), session_key, digest_s
         ('' for none: a delivery of its own);
         then, only when the event tells its conversation something (an Observation), its
         watch's arguments as lib_watch.lua's watch_observe takes them
Returns  1 when the event id was accepted within its dedupe window (nothing stored, the
         watch untouched), else 0.
Atomic:  the dedupe check, the event, every delivery and the watch go in together or not
         at all.
]]
local P = KEYS[1]
local duplicate, after = store_event(P, 1)
if duplicate then
  return 1
end
if ARGV[after] then
  watch_observe(P, after)
end
return 0

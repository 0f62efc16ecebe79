--[[ lib_hold: hold a session's head for one process (a claim).

Not a script of its own: redis.py prepends it to claim.lua, which claims queued heads, and
to accept.lua, which claims a new head for its own process (ClaimAtAccept).

hold(P, destination, member, owner, lease_until)
  Marks the delivery claimed by `owner` until `lease_until`, and moves it to wait in
  `waiting:<destination>` until then (the claim of another process takes it once the lease
  has run out). `owner:<owner>` lists it for `release`; a process killed before it
  releases leaves the set behind, so it goes by itself a day after its last claim or
  renewal.
]]
local function hold(P, destination, member, owner, lease_until)
  redis.call('HSET', P .. 'd:' .. member, 'claimed_by', owner, 'lease_until', lease_until)
  redis.call('ZADD', P .. 'waiting:' .. destination, lease_until, member)
  redis.call('SADD', P .. 'owner:' .. owner, member)
  redis.call('EXPIRE', P .. 'owner:' .. owner, 86400)
end

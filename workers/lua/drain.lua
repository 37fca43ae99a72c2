-- The leader takes an idle replica out of routing before it stops it: DRAINING only if READY, holding no slot,
-- and unused for `idle` seconds. ARGV[3..]: leader token, id, idle seconds. Returns 1 if drained, else 0.
local token, id, idle = ARGV[3], ARGV[4], tonumber(ARGV[5])
local r = redis.call('HMGET', K.replica .. id, 'state', 'last_used', 'ready_at')
local last = tonumber(r[2] or r[3] or '0')
if leads(token) and r[1] == 'READY' and redis.call('SCARD', K.slots .. id) == 0 and last <= NOW - idle then
  redis.call('HSET', K.replica .. id, 'state', 'DRAINING')
  index_ready(id)
  return 1
end
return 0

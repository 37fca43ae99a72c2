-- Extend the leases of the claims a worker still holds. KEYS: leases zset, then one job key per claim
-- ARGV: now, lease seconds, then one token per claim. Returns how many were renewed.
local expires = tonumber(ARGV[1]) + tonumber(ARGV[2])
local renewed = 0
for i = 2, #KEYS do
  local current = redis.call('HMGET', KEYS[i], 'claim', 'id', 'status')
  if current[1] == ARGV[i + 1] and (current[3] == 'QUEUED' or current[3] == 'RUNNING') then
    redis.call('HSET', KEYS[i], 'lease_until', expires)
    redis.call('ZADD', KEYS[1], expires, current[2])
    renewed = renewed + 1
  end
end
return renewed

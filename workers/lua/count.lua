-- Count one more in a window of the Redis clock: a request of an API key in its second, a failed authentication
-- of a client in its minute. The counter expires with its window.
-- ARGV[3..]: what ('rate' or 'auth_failures'), who, window seconds, seconds kept. Returns the count.
local what, who, window, ttl = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local key = K[what] .. who .. ':' .. math.floor(NOW / window)
local count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, ttl) end
return count

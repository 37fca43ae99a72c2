-- Count one more in a window of the Redis clock: a request of an API key in its second, a failed authentication
-- of a client in its minute. The counter expires with its window. What the count refuses is counted in the same
-- step (keys.py: sm:platform_counts): as `within` while the count is at most the limit, as `over` past it.
-- ARGV[3..]: what ('rate' or 'auth_failures'), who, window seconds, seconds kept, the limit, the refusal within it
-- ('' = none), the refusal over it. Returns the count.
local what, who, window, ttl = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local limit, within, over = tonumber(ARGV[7]), ARGV[8], ARGV[9]
local key = K[what] .. who .. ':' .. math.floor(NOW / window)
local count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, ttl) end
local refusal = count > limit and over or within
if refusal ~= '' then refused(refusal) end
return count

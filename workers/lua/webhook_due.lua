-- Move the webhook deliveries whose next attempt is due from the retry set back onto the stream (one step, so none
-- is lost or doubled between the two).
-- ARGV[3..]: how many at most.
-- Returns how many were moved.
local limit = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', K.webhook_retry, '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  redis.call('ZREM', K.webhook_retry, id)
  redis.call('XADD', K.webhooks, '*', 'job', id)
end
return #due

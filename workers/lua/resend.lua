-- Messages lost with a worker that died between taking a message and starting its job, or with a submit cut off
-- mid-way: QUEUED jobs not parked, with no live claim, sent more than `after` seconds ago, whose message has left
-- the model's Celery queue, are sent again. Workers take the oldest message first (LPUSH, BRPOP), so a job's
-- message has left the queue once as many messages still in play were pushed after it as the queue holds: its
-- push number against the model's push count, less the withdrawn jobs' messages pushed after it (taken out of
-- the middle of the queue): a few looks per job whatever the backlog. Lost messages are the oldest sends, so the
-- oldest sends are looked at first. A message pushed past the scripts (by Celery itself) lengthens the queue: a
-- lost one is then found once the queue has drained by as much. A duplicate would be harmless all the same: one
-- task starts the job, the other finds it taken.
-- ARGV[3..]: model, after (seconds), limit. Returns id, owner pairs of the jobs sent again.
local model, after, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local backlog = redis.call('LLEN', K.celery .. model)
local pushes = tonumber(redis.call('GET', K.pushes .. model) or '0')
local withdrawn = K.withdrawn .. model
if backlog == 0 then redis.call('DEL', withdrawn) end  -- every message pushed so far has left the queue
local sent = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.sent .. model, '-inf', NOW - after, 'LIMIT', 0, limit)) do
  local current = redis.call('HMGET', K.job .. id, 'status', 'claim', 'lease_until', 'owner', 'push')
  if current[1] ~= S.QUEUED then
    forget_waiting(id, model)
  elseif not (current[2] and tonumber(current[3] or '0') > NOW) then
    local push = tonumber(current[5] or '0')
    if pushes - push - redis.call('ZCOUNT', withdrawn, '(' .. push, '+inf') >= backlog then
      redis.call('HSET', K.job .. id, 'requeued_at', stamp(NOW))
      send(id, model)
      table.insert(sent, id)
      table.insert(sent, current[4] or '')
    end
  end
end
return sent

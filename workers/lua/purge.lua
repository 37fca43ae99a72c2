-- Cancel a model's waiting jobs (DELETE /v1/models/<m>/queue): every job waiting when the purge began (sent or
-- parked) that is still QUEUED when the purge comes to it, and only the owner's if `mine only`; a running job is
-- left alone. The first call copies both sets into the purge's own set (a job moved between them, sent again or
-- parked, stays in it once; a job submitted later is not in it), and each call takes up to `limit` jobs off it, so
-- Redis is never held long: the caller calls again until it answers done.
-- ARGV[3..]: model, owner, mine only ('1' or '0'), limit, the purge's id (a uuid), first ('1' or '0').
-- Returns {jobs cancelled, 1 if done else 0}.
local model, owner, mine_only, limit = ARGV[3], ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
local purge = K.purge .. ARGV[7]
if ARGV[8] == '1' then
  redis.call('ZUNIONSTORE', purge, 2, K.sent .. model, K.parked .. model)
  redis.call('EXPIRE', purge, 600)
end
local why = cjson.encode({code = 'purged', message = 'the queue of ' .. model .. ' was purged'})
local cancelled = 0
local batch = redis.call('ZRANGE', purge, 0, limit - 1)
for _, id in ipairs(batch) do
  local current = redis.call('HMGET', K.job .. id, 'status', 'owner')
  if current[1] == S.QUEUED and not (mine_only and current[2] ~= owner) then
    conclude(id, model, S.CANCELLED, {'cancelled_while', S.QUEUED, 'error', why})
    cancelled = cancelled + 1
  end
end
if #batch > 0 then redis.call('ZREMRANGEBYRANK', purge, 0, #batch - 1) end
if #batch < limit then
  redis.call('DEL', purge)
  return {cancelled, 1}
end
return {cancelled, 0}

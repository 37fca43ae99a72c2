-- Cancel a model's waiting jobs (DELETE /v1/models/<m>/queue): every QUEUED job, sent or parked, that waited
-- there when the purge began (`before`), and only the owner's if `mine only`; a running job is left alone. One call
-- looks at no more than `limit` of them, so Redis is never held long: the caller calls again with the offsets it
-- answered until it answers done. A job not cancelled (another owner's) stays where it is, and the next call
-- starts past it.
-- ARGV[3..]: model, owner, mine only ('1' or '0'), limit, before ('' = now: the first call), offset into the sent,
-- offset into the parked.
-- Returns {jobs cancelled, before, offset into the sent, offset into the parked, 1 if done else 0}.
local model, owner, mine_only, limit = ARGV[3], ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
local before = ARGV[7] ~= '' and ARGV[7] or stamp(NOW)
local offsets = {tonumber(ARGV[8]), tonumber(ARGV[9])}
local why = cjson.encode({code = 'purged', message = 'the queue of ' .. model .. ' was purged'})
local cancelled, looked, done = 0, 0, 1
for i, waiting in ipairs({K.sent .. model, K.parked .. model}) do
  local batch = redis.call('ZRANGEBYSCORE', waiting, '-inf', before, 'LIMIT', offsets[i], limit - looked)
  for _, id in ipairs(batch) do
    local current = redis.call('HMGET', K.job .. id, 'status', 'owner')
    if current[1] ~= S.QUEUED then
      forget_waiting(id, model)
    elseif mine_only and current[2] ~= owner then
      offsets[i] = offsets[i] + 1
    else
      conclude(id, model, S.CANCELLED, {'cancelled_while', S.QUEUED, 'error', why})
      cancelled = cancelled + 1
    end
  end
  looked = looked + #batch
  if looked >= limit then
    done = 0
    break
  end
end
return {cancelled, before, offsets[1], offsets[2], done}

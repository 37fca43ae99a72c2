-- One consistent snapshot of a model, for the autoscaler and the model view: the time, the counts of jobs sent,
-- parked, waiting of priority low and running, replicas with their in-flight counts (the slots held), moving averages,
-- the latest start failure, the scaling state and an operator's replica bounds (sm:scale_bounds).
-- ARGV[3..]: model. Returns it as JSON.
local model = ARGV[3]
local function hash(key)
  local flat, found = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do found[flat[i]] = flat[i + 1] end
  return found
end
local replicas = {}
for _, id in ipairs(redis.call('SMEMBERS', K.replicas .. model)) do
  local replica = hash(K.replica .. id)
  if replica.id then
    replica.in_flight = redis.call('SCARD', K.slots .. id)
    table.insert(replicas, replica)
  end
end
return cjson.encode({
  now = NOW,
  sent = redis.call('ZCARD', K.sent .. model),
  parked = redis.call('ZCARD', K.parked .. model),
  low = redis.call('ZCARD', K.low .. model),
  running = redis.call('SCARD', K.running .. model),
  replicas = replicas,
  stats = hash(K.stats .. model),
  start_failure = hash(K.start_failure .. model),
  scaling = hash(K.scaling .. model),
  scale_bounds = hash(K.scale_bounds .. model),
})

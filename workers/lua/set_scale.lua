-- An operator's replica bounds of a model (PUT /v1/models/<m>/scale), merged with the bounds in effect (its earlier
-- override, else the models file's) in one step, so two operators' changes never mix halves; the leading
-- autoscaler is woken to apply them.
-- ARGV[3..]: model, min_replicas ('' = as in effect), max_replicas ('' = as in effect), the models file's
-- min_replicas and max_replicas, who set them.
-- Returns {min, max, was min, was max, was source ('override' or 'config')}; {'INVALID', min, max} when min would
-- exceed max (nothing is written).
local model, min, max, who = ARGV[3], ARGV[4], ARGV[5], ARGV[8]
local key = K.scale_bounds .. model
local was = redis.call('HMGET', key, 'min_replicas', 'max_replicas')
local source = 'override'
if not (was[1] and was[2]) then was, source = {ARGV[6], ARGV[7]}, 'config' end
if min == '' then min = was[1] end
if max == '' then max = was[2] end
if tonumber(min) > tonumber(max) then return {'INVALID', min, max} end
redis.call('HSET', key, 'min_replicas', min, 'max_replicas', max, 'at', stamp(NOW), 'by', who)
wake(model)
return {min, max, was[1], was[2], source}

-- Send parked jobs to the free slots of READY replicas: the safety net under the sends on every freed slot.
-- ARGV[3..]: model. Returns how many were sent.
return dispatch(ARGV[3], free_slots(ARGV[3]))

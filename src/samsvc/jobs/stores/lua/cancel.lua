-- End a job as cancelled unless it has ended. Returns 'missing', 'ended' or 'cancelled'.
-- KEYS: job, events, active, outbox
-- ARGV: job_id, now, message, ending due
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if is_final(status) then return 'ended' end
redis.call('HSET', KEYS[1], 'error_message', ARGV[3])
end_job(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 'cancelled', ARGV[2], ARGV[4])
return 'cancelled'

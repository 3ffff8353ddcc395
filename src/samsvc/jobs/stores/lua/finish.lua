-- End a job whose every image has a result but which has not ended. Returns its status or ''.
-- KEYS: job, results, events, active, outbox
-- ARGV: job_id, now, ending due
local status = redis.call('HGET', KEYS[1], 'status')
if not status or is_final(status) then return '' end
if redis.call('HLEN', KEYS[2]) < tonumber(redis.call('HGET', KEYS[1], 'total_images')) then return '' end
local final = 'failed'
if tonumber(redis.call('HGET', KEYS[1], 'succeeded_images')) > 0 then final = 'completed' end
end_job(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[1], final, ARGV[2], ARGV[3])
return final

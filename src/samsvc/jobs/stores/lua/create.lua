-- Create a job with its ACCEPTED event and the results known at submission, at once.
-- KEYS: job, events, jobs index, request key, job key prefix, results, ledger, stats, retries, active, outbox,
--       the owner's jobs index
-- ARGV: request_id, job_id, created_ms, retention_s, fields (JSON), accepted (JSON), index horizon,
--       now, model, weight, ending due, queued-images limit of the owner (0: none),
--       then (index, result JSON, ok) per early result
-- Returns the job id (of an earlier job with the same request_id), or 'limit:<queued>' when the
-- owner's images still to run plus this job's would pass the limit.
if ARGV[1] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing and redis.call('EXISTS', KEYS[5] .. existing) == 1 then return existing end
end
local fields = cjson.decode(ARGV[5])
local owner_active = KEYS[10] .. ':' .. fields['owner']
local limit = tonumber(ARGV[12])
if limit > 0 and fields['job_type'] ~= 'single' then
  local queued = 0
  for _, other in ipairs(redis.call('SMEMBERS', owner_active)) do
    local f = redis.call('HMGET', KEYS[5] .. other, 'total_images', 'succeeded_images', 'failed_images', 'status')
    if f[1] and not is_final(f[4]) then
      queued = queued + tonumber(f[1]) - tonumber(f[2]) - tonumber(f[3])
    elseif not f[1] then
      redis.call('SREM', owner_active, other)
    end
  end
  local early = (#ARGV - 12) / 3
  if queued + tonumber(fields['total_images']) - early > limit then return 'limit:' .. queued end
end
for name, value in pairs(fields) do redis.call('HSET', KEYS[1], name, value) end
-- A job created ended is a Segment call kept as its status only: no event log (a stream costs
-- kilobytes; its WatchJob ends at once).
if not is_final(fields['status']) then
  redis.call('XADD', KEYS[2], '*', 'kind', 'accepted', 'data', ARGV[6])
end
for _, index in ipairs({KEYS[3], KEYS[12]}) do
  redis.call('ZADD', index, ARGV[3], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[7])
end
if ARGV[1] ~= '' then redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[4]) end
if fields['job_type'] ~= 'single' and not is_final(fields['status']) then
  redis.call('SADD', KEYS[10], ARGV[2])
  redis.call('SADD', owner_active, ARGV[2])
end
local k = {job = KEYS[1], results = KEYS[6], events = KEYS[2], ledger = KEYS[7], stats = KEYS[8],
           retries = KEYS[9], active = KEYS[10], outbox = KEYS[11]}
for i = 13, #ARGV, 3 do
  record_one(k, {job_id = ARGV[2], index = ARGV[i], text = ARGV[i + 1], ok = ARGV[i + 2],
                 seconds = '0', stamp = ARGV[8], model = ARGV[9], weight = ARGV[10], due = ARGV[11]})
end
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[6]}) do redis.call('EXPIRE', key, ARGV[4]) end
return ARGV[2]

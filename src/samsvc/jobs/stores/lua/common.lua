-- Shared by every script of samsvc.jobs.redis_store (prepended to each when it is loaded).
-- Key layout: see that module's docstring.

local function is_final(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end

-- The lease "token|until_ms" of an image: holder, until (or '', 0).
local function lease_of(ledger, index)
  local lease = redis.call('HGET', ledger, index .. ':lease')
  if not lease then return '', 0 end
  local sep = string.find(lease, '|', 1, true)
  return string.sub(lease, 1, sep - 1), tonumber(string.sub(lease, sep + 1))
end

local function ledger_int(ledger, index, name)
  return tonumber(redis.call('HGET', ledger, index .. ':' .. name) or '0')
end

-- End a job: status, FINISHED event, out of the active sets (everyone's, `active`, and its
-- owner's, `active:{owner}`); a batch goes into the outbox (its clean-up and webhook are due at
-- `due` unless the process that ended it does them first).
local function end_job(job, events, active, outbox, job_id, status, stamp, due)
  redis.call('HSET', job, 'status', status, 'completed_at_ms', stamp)
  redis.call('XADD', events, '*', 'kind', 'finished', 'data', cjson.encode({status = status}))
  redis.call('SREM', active, job_id)
  redis.call('SREM', active .. ':' .. (redis.call('HGET', job, 'owner') or ''), job_id)
  if redis.call('HGET', job, 'job_type') ~= 'single' then redis.call('ZADD', outbox, due, job_id) end
end

-- Record one image's result once; returns 'ignored', 'recorded' or 'finished'.
-- k: job, results, events, ledger, stats, retries, active, outbox
-- a: job_id, index, text, ok ('1'/'0'), seconds, stamp, model, weight, due
local function record_one(k, a)
  if redis.call('HSETNX', k.results, a.index, a.text) == 0 then return 'ignored' end
  local ok, bad
  if a.ok == '1' then
    ok = redis.call('HINCRBY', k.job, 'succeeded_images', 1)
    bad = tonumber(redis.call('HGET', k.job, 'failed_images'))
  else
    bad = redis.call('HINCRBY', k.job, 'failed_images', 1)
    ok = tonumber(redis.call('HGET', k.job, 'succeeded_images'))
  end
  redis.call('HINCRBYFLOAT', k.job, 'image_seconds', a.seconds)
  if redis.call('HGET', k.job, 'started_at_ms') == '' then
    redis.call('HSET', k.job, 'started_at_ms', a.stamp)
  end
  redis.call('HSET', k.job, 'status', 'processing')
  redis.call('HDEL', k.ledger, a.index .. ':lease')
  redis.call('ZREM', k.retries, a.job_id .. '|' .. a.index)
  if a.ok == '1' and tonumber(a.seconds) > 0 then
    local new = tonumber(a.seconds)
    local old = redis.call('HGET', k.stats, a.model)
    if old then new = tonumber(old) + tonumber(a.weight) * (new - tonumber(old)) end
    redis.call('HSET', k.stats, a.model, tostring(new))
  end
  local total = tonumber(redis.call('HGET', k.job, 'total_images'))
  redis.call('XADD', k.events, '*', 'kind', 'image', 'data', cjson.encode({index = tonumber(a.index)}))
  redis.call('XADD', k.events, '*', 'kind', 'progress', 'data',
    cjson.encode({processed = ok + bad, failed = bad, total = total}))
  if ok + bad >= total then
    local final = 'failed'
    if ok > 0 then final = 'completed' end
    end_job(k.job, k.events, k.active, k.outbox, a.job_id, final, a.stamp, a.due)
    return 'finished'
  end
  return 'recorded'
end

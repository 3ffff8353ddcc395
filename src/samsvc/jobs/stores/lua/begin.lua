-- A delivery starts an image. Returns {outcome, failures, crashes}; outcome is one of
-- 'missing', 'skip', 'busy', 'crashed', 'run' (samsvc.jobs.store.BeginOutcome).
-- KEYS: job, results, ledger
-- ARGV: index, token, now, lease_ms, max_crashes, retention_s
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0, 0} end
local i = ARGV[1]
if is_final(status) or redis.call('HEXISTS', KEYS[2], i) == 1 then return {'skip', 0, 0} end
local now = tonumber(ARGV[3])
local holder, until_ms = lease_of(KEYS[3], i)
if holder ~= '' and holder ~= ARGV[2] and until_ms > now then return {'busy', 0, 0} end
local started = ledger_int(KEYS[3], i, 'started')
local failures = ledger_int(KEYS[3], i, 'failures')
local crashes = math.max(started - ledger_int(KEYS[3], i, 'ended'), 0)
if crashes >= tonumber(ARGV[5]) then return {'crashed', failures, crashes} end
redis.call('HSET', KEYS[3], i .. ':started', started + 1, i .. ':lease', ARGV[2] .. '|' .. (now + tonumber(ARGV[4])))
redis.call('EXPIRE', KEYS[3], ARGV[6])
if status == 'queued' then redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at_ms', ARGV[3]) end
return {'run', failures, crashes}

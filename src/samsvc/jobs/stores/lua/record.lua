-- Record an image's result once. Returns 'missing', 'ignored', 'recorded' or 'finished'.
-- KEYS: job, results, events, ledger, stats, retries, active, outbox
-- ARGV: job_id, index, result JSON, ok, seconds, now, retention_s, model, weight, ending due
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if is_final(status) then return 'ignored' end
local outcome = record_one(
  {job = KEYS[1], results = KEYS[2], events = KEYS[3], ledger = KEYS[4], stats = KEYS[5],
   retries = KEYS[6], active = KEYS[7], outbox = KEYS[8]},
  {job_id = ARGV[1], index = ARGV[2], text = ARGV[3], ok = ARGV[4], seconds = ARGV[5], stamp = ARGV[6],
   model = ARGV[8], weight = ARGV[9], due = ARGV[10]})
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
return outcome

-- AuditFlow dedup record: processed runs of sequence numbers per (node, epoch), kept as a
-- sorted set of disjoint runs "first:end" scored by first. Mirrors memory.rs.
--
-- ARGV[1] = key prefix, ARGV[2] = 'check' or 'mark', ARGV[3] = TTL seconds (mark), then
-- (node, epoch, first, end) per span.
-- check returns, per span, a flat array of the processed runs intersecting it:
--   {first1, end1, first2, end2, ...} (as strings); mark returns 0.
local prefix, mode, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function num(x) return string.format('%.0f', x) end
local out = {}
local i = 4
while i <= #ARGV do
  local key = prefix .. 'd:' .. ARGV[i] .. ':' .. ARGV[i + 1]
  local first, stop = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  if mode == 'check' then
    local found = {}
    local runs = redis.call('ZREVRANGEBYSCORE', key, '(' .. num(stop), '-inf')
    for _, run in ipairs(runs) do
      local a, b = string.match(run, '^(%d+):(%d+)$')
      a, b = tonumber(a), tonumber(b)
      if b <= first then break end
      table.insert(found, 1, num(b))
      table.insert(found, 1, num(a))
    end
    out[#out + 1] = found
  elseif first < stop then
    local a, b = first, stop
    local runs = redis.call('ZREVRANGEBYSCORE', key, num(stop), '-inf')
    for _, run in ipairs(runs) do
      local x, y = string.match(run, '^(%d+):(%d+)$')
      x, y = tonumber(x), tonumber(y)
      if y < first then break end
      if x < a then a = x end
      if y > b then b = y end
      redis.call('ZREM', key, run)
    end
    redis.call('ZADD', key, num(a), num(a) .. ':' .. num(b))
    redis.call('EXPIRE', key, ttl)
  end
end
if mode == 'check' then return out end
return 0

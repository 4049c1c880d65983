local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local consume = ARGV[2] == '1'
local known = tonumber(ARGV[3])
local born = tonumber(redis.call('GET', KEYS[1]))
local lost = tonumber(redis.call('GET', KEYS[2])) or -1
if not born then
  born = now
  redis.call('SET', KEYS[1], string.format('%.0f', born))
  if known ~= 0 then
    lost = now
    redis.call('SET', KEYS[2], string.format('%.0f', lost))
  end
elseif known ~= 0 and born ~= known and born > lost then
  lost = born
  redis.call('SET', KEYS[2], string.format('%.0f', lost))
end
local reads = tonumber(ARGV[7])
local n = #KEYS - 2 - reads
-- The counters read (marks): 1 when one counts anything in its window, whatever the
-- limits find; a read within a window of a loss of counts is not known.
local seen = {}
for j = 1, reads do
  local a = 8 + n * 4 + (j - 1) * 2
  local w = tonumber(ARGV[a])
  local g = tonumber(ARGV[a + 1])
  if lost >= 0 and now < lost + w + g then
    return {2, born, n + j - 1}
  end
  local lo = math.floor(now / g) - 12
  local h = redis.call('HGETALL', KEYS[2 + n + j])
  local any = 0
  for k = 1, #h, 2 do
    if tonumber(h[k]) >= lo and tonumber(h[k + 1]) > 0 then
      any = 1
    end
  end
  seen[j] = any
end
-- The combinations of marks that deny the call ('1' at 1 + the reads found as bits): such a
-- call is denied by its conditions, so nothing is reserved for it.
local denying = ARGV[8 + n * 4 + reads * 2] or ''
if consume and denying ~= '' then
  local c = 0
  for j = reads, 1, -1 do c = c * 2 + seen[j] end
  if string.byte(denying, c + 1) == 49 then
    local r = {3, born}
    for j = 1, reads do r[#r + 1] = seen[j] end
    return r
  end
end
local out = {}
local fits = true
local newest = {}
local life = 0
for i = 1, n do
  local a = 7 + (i - 1) * 4
  local w = tonumber(ARGV[a + 1])
  local g = tonumber(ARGV[a + 2])
  local max = tonumber(ARGV[a + 3])
  local amt = tonumber(ARGV[a + 4])
  local key = KEYS[i + 2]
  if lost >= 0 and now < lost + w + g then
    return {2, born, i - 1}
  end
  local b = math.floor(now / g)
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k > b then b = k end
  end
  local lo = b - 12
  local used = 0
  local cnt = {}
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k >= lo then
      local c = tonumber(h[j + 1])
      used = used + c
      cnt[k - lo] = (cnt[k - lo] or 0) + c
    elseif consume then
      redis.call('HDEL', key, h[j])
    end
  end
  local reset = 0
  for k = 12, 0, -1 do
    if (cnt[k] or 0) > 0 then
      reset = math.max(0, (lo + k + 13) * g - now)
      break
    end
  end
  local retry = 0
  local need = used + amt - max
  if need > 0 then
    fits = false
    retry = -1
    if amt <= max then
      local freed = 0
      for k = 0, 12 do
        local c = cnt[k] or 0
        freed = freed + c
        if freed >= need and c > 0 then
          retry = math.max(1, (lo + k + 13) * g - now)
          break
        end
      end
    end
  end
  newest[i] = b
  life = math.max(life, math.ceil((w + g) / 1000) + tonumber(ARGV[6]))
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = retry
end
if not fits then
  local r = {0, born}
  for _, v in ipairs(out) do r[#r + 1] = v end
  for j = 1, reads do r[#r + 1] = seen[j] end
  return r
end
local r = {1, born, 0}
if not consume or n == 0 then
  for i = 1, n do
    r[#r + 1] = out[(i - 1) * 3 + 1]
    r[#r + 1] = out[(i - 1) * 3 + 2]
  end
  for j = 1, reads do r[#r + 1] = seen[j] end
  return r
end
local id = ARGV[4]
if id == '0' then
  id = tostring(redis.call('INCR', ARGV[5] .. 'rid'))
end
local rkey = ARGV[5] .. 'r:' .. id
for i = 1, n do
  local a = 7 + (i - 1) * 4
  local key = KEYS[i + 2]
  local bucket = string.format('%.0f', newest[i])
  redis.call('HINCRBY', key, bucket, ARGV[a + 4])
  redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((tonumber(ARGV[a + 1]) + tonumber(ARGV[a + 2])) / 1000) + tonumber(ARGV[6])))
  redis.call('RPUSH', rkey, key, bucket, ARGV[a + 4])
  local g = tonumber(ARGV[a + 2])
  r[#r + 1] = out[(i - 1) * 3 + 1] + tonumber(ARGV[a + 4])
  r[#r + 1] = math.max(0, (newest[i] + 13) * g - now)
end
local ttl = redis.call('PTTL', rkey)
redis.call('PEXPIRE', rkey, string.format('%.0f', math.max(life, ttl)))
r[3] = tonumber(id)
for j = 1, reads do r[#r + 1] = seen[j] end
return r

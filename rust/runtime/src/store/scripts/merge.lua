local now = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local a = 3
local r = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local w = tonumber(ARGV[a])
  local g = tonumber(ARGV[a + 1])
  local pairs_n = tonumber(ARGV[a + 2])
  a = a + 3
  for j = 1, pairs_n do
    redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  local b = math.floor(now / g)
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k > b then b = k end
  end
  local counts = {}
  for k = 0, 12 do counts[k] = 0 end
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k >= b - 12 then
      counts[k - b + 12] = counts[k - b + 12] + tonumber(h[j + 1])
    else
      redis.call('HDEL', key, h[j])
    end
  end
  if pairs_n > 0 then
    redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((w + g) / 1000) + slack))
  end
  r[#r + 1] = b
  for k = 0, 12 do r[#r + 1] = counts[k] end
end
return r

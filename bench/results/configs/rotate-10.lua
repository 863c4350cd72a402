local i = 0
request = function()
  i = (i + 1) % 10
  return wrk.format("GET", "/small", {["Host"] = "h" .. i .. ".bench"})
end

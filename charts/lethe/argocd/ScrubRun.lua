-- Argo CD health check for lethe.dev/ScrubRun: Suspended while the safety
-- brake waits for approval, Healthy once succeeded, Degraded when failed.
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end
local hs = { status = "Progressing", message = "Waiting for the Lethe operator" }
if obj.status == nil then return hs end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the Lethe operator to observe the latest spec"
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Suspended"
  hs.message = stalled.reason .. ": " .. stalled.message
  return hs
end
local failed = condition("Failed")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = failed.reason .. ": " .. failed.message
  return hs
end
local done = condition("Succeeded")
if done ~= nil and done.status == "True" then
  hs.status = "Healthy"
  hs.message = done.reason .. ": " .. done.message
  return hs
end
if obj.status.phase ~= nil then hs.message = obj.status.phase end
return hs

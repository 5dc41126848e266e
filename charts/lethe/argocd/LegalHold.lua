-- Argo CD health check for lethe.dev/LegalHold: Healthy when valid (active or expired).
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
local ready = condition("Ready")
if ready == nil then return hs end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" then
  hs.status = "Degraded"
end
hs.message = ready.reason .. ": " .. ready.message
return hs

-- Argo CD health check for lethe.dev/DeletionRequest: Suspended while it
-- waits for approval, Progressing while erasing, Healthy once it has a
-- receipt (Completed, PartiallyCompleted, Deferred or Blocked: the outcome
-- is in the message), Degraded when it failed or cannot start.
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
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. ready.message
  return hs
end
if obj.status.phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = "AwaitingApproval: set the lethe.dev/approved-by annotation"
  return hs
end
local complete = condition("Complete")
if complete ~= nil and obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = complete.message
  return hs
end
if complete ~= nil and complete.status == "True" then
  hs.status = "Healthy"
  hs.message = complete.reason .. ": " .. complete.message
  return hs
end
if obj.status.phase ~= nil then hs.message = obj.status.phase end
return hs

"""Renting a GPU for a run: provider clients (Vast.ai REST, RunPod REST v2) behind one small
interface (`heretic.cloud.records.Provider`), the launcher, the availability monitor and a
rough hours/cost estimate. Library code only: nothing here prints or exits; failures raise
`heretic.errors.CloudError` (or ConfigError/TokenError for bad options and missing tokens).
"""

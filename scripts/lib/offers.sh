# shellcheck shell=bash
# The offer filter of `heretic cloud offers|launch|monitor` (heretic/cloud/offer_filter.py),
# for the shell scripts (sourced, not run); tests/test_cloud_scripts.py holds the two equal.
# A100 80GB, one GPU, a disk big enough for the run, a minimum CUDA version, a price cap.
#
#   vast_offer_filter MAX_PRICE DISK_GB MIN_CUDA   prints the body of Vast's POST /bundles/.
#       It sends the disk as allocated_storage, so dph_total (and the cap) include its cost.
#   runpod_catalog_query CLOUD MIN_CUDA            the query string of GET /catalog/gpus
#   runpod_offers TIER MAX_PRICE                   reads the catalog on stdin and prints the
#       A100 80GB types in stock in the tier (secure|community) at or under the cap, cheapest
#       first, as a JSON array of {id, price, stock}.

vast_offer_filter() {
    jq -n --arg max "$1" --argjson disk "$2" --arg cuda "$3" '{
        external: {eq: false}, rented: {eq: false},
        gpu_name: {in: ["A100 SXM4", "A100 PCIE", "A100X"]}, gpu_ram: {gte: 79000},
        num_gpus: {eq: 1}, rentable: {eq: true}, verified: {eq: true},
        reliability: {gt: 0.98}, cuda_max_good: {gte: ($cuda | tonumber)},
        order: [["dph_total", "asc"]], type: "on-demand", limit: 20,
        disk_space: {gte: $disk}, allocated_storage: $disk}
        + (if $max == "" then {} else {dph_total: {lte: ($max | tonumber)}} end)'
}

runpod_catalog_query() {
    printf 'include=AVAILABILITY&product=POD&cloud=%s&count=1&minCudaVersion=%s' "$1" "$2"
}

runpod_offers() {
    jq -c --arg tier "$1" --arg max "$2" '
        [(.gpus // .)[]
         | select(.id == "NVIDIA A100 80GB PCIe" or .id == "NVIDIA A100-SXM4-80GB")
         | .stock = (.availability // ([.dataCenters[]?.availability]
                     | if any(. == "HIGH") then "HIGH" elif any(. == "MEDIUM") then "MEDIUM"
                       elif any(. == "LOW") then "LOW" else "NONE" end))
         | select(.stock != "NONE" and .price[$tier] != null)
         | select($max == "" or .price[$tier] <= ($max | tonumber))
         | {id, price: .price[$tier], stock}]
        | sort_by(.price)'
}

/*
 * taxi_features.h - the 18 features of the Chicago taxi tf.train.Examples in
 * ../shared/data/csv_example_gen (TFX's csv_example_gen output), with their dtypes: one table
 * for the tests that parse the shards and the benchmark that times parsing them.
 */
#ifndef FERRY_TESTS_TAXI_FEATURES_H
#define FERRY_TESTS_TAXI_FEATURES_H

#include "ferry.h"

static const struct {
    const char *key;
    ferry_dtype dtype;
} taxi[18] = {
    {"company", FERRY_DTYPE_BYTES},
    {"dropoff_census_tract", FERRY_DTYPE_INT64},
    {"dropoff_community_area", FERRY_DTYPE_INT64},
    {"dropoff_latitude", FERRY_DTYPE_FLOAT32},
    {"dropoff_longitude", FERRY_DTYPE_FLOAT32},
    {"fare", FERRY_DTYPE_FLOAT32},
    {"payment_type", FERRY_DTYPE_BYTES},
    {"pickup_census_tract", FERRY_DTYPE_INT64},
    {"pickup_community_area", FERRY_DTYPE_INT64},
    {"pickup_latitude", FERRY_DTYPE_FLOAT32},
    {"pickup_longitude", FERRY_DTYPE_FLOAT32},
    {"tips", FERRY_DTYPE_FLOAT32},
    {"trip_miles", FERRY_DTYPE_FLOAT32},
    {"trip_seconds", FERRY_DTYPE_INT64},
    {"trip_start_day", FERRY_DTYPE_INT64},
    {"trip_start_hour", FERRY_DTYPE_INT64},
    {"trip_start_month", FERRY_DTYPE_INT64},
    {"trip_start_timestamp", FERRY_DTYPE_INT64},
};

#endif

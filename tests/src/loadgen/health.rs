//! `loadgen health`: the meeting service's standard gRPC health status, optionally waiting for
//! an expected one (for fault runs: NOT_SERVING during a database outage, SERVING after).

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The service's status now: `SERVING`, `NOT_SERVING`, … or `UNREACHABLE`.
pub async fn status(addr: &str, service: &str) -> String {
    let Ok(endpoint) = Channel::from_shared(addr.to_owned()) else {
        return "BAD_ADDRESS".to_owned();
    };
    let channel = match endpoint
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    {
        Ok(channel) => channel,
        Err(_) => return "UNREACHABLE".to_owned(),
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    match answer {
        Ok(response) => ServingStatus::try_from(response.into_inner().status)
            .unwrap_or(ServingStatus::Unknown)
            .as_str_name()
            .to_owned(),
        Err(status) => format!("ERROR({:?})", status.code()),
    }
}

/// Polls until the status is `expected` or `wait` passes; whether it was reached.
pub async fn wait_for(addr: &str, service: &str, expected: &str, wait: Duration) -> bool {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let now = status(addr, service).await;
        if now != last {
            println!("{:>6.1}s  {service:?}: {now}", started.elapsed().as_secs_f64());
            last = now;
        }
        if last == expected {
            return true;
        }
        if started.elapsed() >= wait {
            println!("gave up after {wait:?}: still {last}, expected {expected}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

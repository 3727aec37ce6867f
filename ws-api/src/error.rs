//! Binance error bodies: `{"code": -1121, "msg": "Invalid symbol."}`, with Binance's codes and
//! message texts word for word (clients such as ccxt map errors by the text).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error as the API answers it: HTTP status, Binance code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: i32,
    pub msg: String,
    /// `Retry-After` in seconds (429 and 418 answers).
    pub retry_after_s: Option<u64>,
    /// Extra detail some errors carry (cancelReplace's two results).
    pub data: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: u16, code: i32, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            msg: msg.into(),
            retry_after_s: None,
            data: None,
        }
    }

    /// -1000: a failure of ours, not of the request.
    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError::new(500, -1000, msg)
    }

    /// -1001: the exchange is stopping or a reply was lost.
    pub fn disconnected() -> ApiError {
        ApiError::new(
            503,
            -1001,
            "Internal error; unable to process your request. Please try again.",
        )
    }

    /// -1008: the pipeline's queues are full.
    pub fn overloaded() -> ApiError {
        ApiError::new(
            503,
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        )
    }

    /// -1100 for a parameter with characters outside its legal range.
    pub fn illegal_chars(param: &str, legal: &str) -> ApiError {
        ApiError::new(
            400,
            -1100,
            format!("Illegal characters found in parameter '{param}'; legal range is '{legal}'."),
        )
    }

    /// -1101: a parameter sent twice.
    pub fn duplicate_param() -> ApiError {
        ApiError::new(400, -1101, "Duplicate values for a parameter detected.")
    }

    /// -1102: a mandatory parameter missing, empty or malformed.
    pub fn mandatory(param: &str) -> ApiError {
        ApiError::new(
            400,
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    /// -1106: a parameter the request does not take in this combination.
    pub fn not_required(param: &str) -> ApiError {
        ApiError::new(
            400,
            -1106,
            format!("Parameter '{param}' sent when not required."),
        )
    }

    /// -1111: more decimals than the asset has.
    pub fn too_much_precision(param: &str) -> ApiError {
        ApiError::new(
            400,
            -1111,
            format!("Parameter '{param}' has too much precision."),
        )
    }

    pub fn invalid_symbol() -> ApiError {
        ApiError::new(400, -1121, "Invalid symbol.")
    }

    pub fn invalid_interval() -> ApiError {
        ApiError::new(400, -1120, "Invalid interval.")
    }

    /// -1013 for a failed filter: `Filter failure: LOT_SIZE`.
    pub fn filter(name: &str) -> ApiError {
        ApiError::new(400, -1013, format!("Filter failure: {name}"))
    }

    /// -2010: the engine refused a new order.
    pub fn order_rejected(msg: &str) -> ApiError {
        ApiError::new(400, -2010, msg)
    }

    /// -2011: the engine refused a cancel.
    pub fn cancel_rejected() -> ApiError {
        ApiError::new(400, -2011, "Unknown order sent.")
    }

    pub fn no_such_order() -> ApiError {
        ApiError::new(400, -2013, "Order does not exist.")
    }

    pub fn invalid_timestamp_window() -> ApiError {
        ApiError::new(
            400,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )
    }

    pub fn timestamp_ahead() -> ApiError {
        ApiError::new(
            400,
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        )
    }

    pub fn bad_signature() -> ApiError {
        ApiError::new(400, -1022, "Signature for this request is not valid.")
    }

    pub fn bad_api_key_format() -> ApiError {
        ApiError::new(401, -2014, "API-key format invalid.")
    }

    pub fn invalid_api_key() -> ApiError {
        ApiError::new(
            401,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            -1002,
            "You are not authorized to execute this request.",
        )
    }

    pub fn bad_recv_window() -> ApiError {
        ApiError::new(400, -1131, "recvWindow must be less than 60000")
    }

    /// -1130 for a value of the right shape that is not acceptable.
    pub fn invalid_data(param: &str) -> ApiError {
        ApiError::new(
            400,
            -1130,
            format!("Invalid data sent for a parameter: '{param}'."),
        )
    }

    pub fn unsupported_combination() -> ApiError {
        ApiError::new(400, -1014, "Unsupported order combination.")
    }

    pub fn not_found() -> ApiError {
        ApiError::new(404, -1099, "Not found, unauthenticated, or unauthorized.")
    }

    /// The JSON body `{"code":..,"msg":..}`.
    pub fn body(&self) -> serde_json::Value {
        let mut b = serde_json::json!({"code": self.code, "msg": self.msg});
        if let Some(d) = &self.data {
            b["data"] = d.clone();
        }
        b
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = (status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}

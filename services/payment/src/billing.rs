//! What the billing view reads: a learner's orders and receipts, a course's earnings for
//! its instructor, and the ledger's balances for admins. Receipts and earnings are
//! queries over the ledger, so they cannot disagree with the money that moved.

use std::collections::BTreeMap;

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::validate::{page_size, page_token};
use duovarsity_proto::payment::*;

use crate::Payments;
use crate::convert::{money, receipt_to_proto};
use crate::courses::Caller;
use crate::store;
use crate::store::orders::OrderRow;

const DEFAULT_PAGE_SIZE: u32 = 20;

impl Payments {
    /// The order, if the caller is its learner or an admin (NOT_FOUND for anyone else).
    pub(crate) async fn own_order(
        &self,
        claims: &Claims,
        order_id: &str,
    ) -> Result<OrderRow, Error> {
        store::orders::by_id(&self.db, order_id)
            .await?
            .filter(|order| order.learner_id == claims.sub || claims.is_admin())
            .ok_or_else(|| Error::not_found(format!("order {order_id}")))
    }

    pub(crate) async fn reread(&self, order_id: &str) -> Result<Order, Error> {
        let order = store::orders::by_id(&self.db, order_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("order {order_id}")))?;
        Ok(self.order_view(&order))
    }

    pub async fn get_order(&self, claims: &Claims, order_id: &str) -> Result<Order, Error> {
        Ok(self.order_view(&self.own_order(claims, order_id).await?))
    }

    pub async fn list_my_orders(
        &self,
        claims: &Claims,
        request: ListMyOrdersRequest,
    ) -> Result<ListMyOrdersResponse, Error> {
        let limit = page_size(request.page_size, DEFAULT_PAGE_SIZE);
        let after = page_token::cursor(&request.page_token, "ListMyOrders", |id| {
            Some(id.to_string())
        })?;
        let rows =
            store::orders::of_learner(&self.db, &claims.sub, after.as_deref(), limit + 1).await?;
        let (rows, next_page_token) = page_token::page(rows, limit, |row| row.id.clone());
        Ok(ListMyOrdersResponse {
            orders: rows.iter().map(|row| self.order_view(row)).collect(),
            next_page_token,
        })
    }

    pub async fn list_my_receipts(
        &self,
        claims: &Claims,
        request: ListMyReceiptsRequest,
    ) -> Result<ListMyReceiptsResponse, Error> {
        let limit = page_size(request.page_size, DEFAULT_PAGE_SIZE);
        let after = page_token::cursor(&request.page_token, "ListMyReceipts", |id| {
            Some(id.to_string())
        })?;
        let rows =
            store::ledger::receipts(&self.db, &claims.sub, after.as_deref(), limit + 1).await?;
        let (rows, next_page_token) = page_token::page(rows, limit, |row| row.id.clone());
        Ok(ListMyReceiptsResponse {
            receipts: rows
                .iter()
                .map(receipt_to_proto)
                .collect::<Result<_, _>>()?,
            next_page_token,
        })
    }

    /// A course's earnings: its instructor (as the course service says) and admins.
    pub async fn course_earnings(
        &self,
        claims: &Claims,
        caller: &Caller,
        course_id: &str,
    ) -> Result<CourseEarnings, Error> {
        let course = self.courses.course(caller, course_id).await?;
        if course.instructor_id != claims.sub && !claims.is_admin() {
            return Err(Error::permission_denied(
                "NOT_COURSE_OWNER",
                "only the course's instructor or an admin may see its earnings",
            ));
        }
        let earned = store::ledger::course_earnings(&self.db, &course.id).await?;
        Ok(CourseEarnings {
            course_id: course.id,
            instructor_id: course.instructor_id,
            earned: earned
                .iter()
                .map(|(currency, amount)| money(currency, *amount))
                .collect(),
        })
    }

    pub async fn ledger_summary(&self) -> Result<LedgerSummary, Error> {
        let balances = store::ledger::all_balances(&self.db).await?;
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, currency, balance) in &balances {
            *sums.entry(currency).or_default() += balance;
        }
        Ok(LedgerSummary {
            accounts: balances
                .iter()
                .map(|(account, currency, balance)| AccountBalance {
                    account: account.clone(),
                    balance: Some(money(currency, *balance)),
                })
                .collect(),
            imbalance: sums
                .iter()
                .map(|(currency, sum)| money(currency, *sum))
                .collect(),
        })
    }
}

"""The question templates over the embedded warehouse, and the slot pools they are filled from.

Each :class:`Template` has an id, a category, a difficulty, 2-4 phrasings and one gold SQL text in SQLite
syntax with the macros of :mod:`.dialects`. Slots (``{country}``, ``{year}``, ...) are filled from the
generated data, and every slot value appears verbatim in both the question and the SQL so that a small
model can copy it. :mod:`.questions` turns them into examples.
"""

from __future__ import annotations

import calendar
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from . import warehouse as W

CATEGORIES = (
    "single_table", "join", "revenue", "time_series", "churn", "forecast", "subscriptions", "window",
    "complex_cte", "edge_cases",
)

# Shared SQL fragments (SQLite syntax; aliases: c customers, o orders, oi order_items, p products,
# s subscriptions, cp churn_predictions, f forecast_predictions).
J_CO = "customers c JOIN orders o ON o.customer_id = c.customer_id"
J_ITEMS = ("order_items oi JOIN orders o ON oi.order_id = o.order_id "
           "JOIN products p ON oi.product_id = p.product_id")
J_ALL = (f"{J_CO} JOIN order_items oi ON oi.order_id = o.order_id "
         "JOIN products p ON oi.product_id = p.product_id")
J_CP = "churn_predictions cp JOIN customers c ON cp.customer_id = c.customer_id"
J_SC = "subscriptions s JOIN customers c ON s.customer_id = c.customer_id"
LINE = "oi.quantity * oi.unit_price * (1 - oi.discount)"


@dataclass(frozen=True)
class Template:
    id: str
    category: str
    difficulty: str
    phrasings: tuple[str, ...]
    sql: str
    space: Callable[["Context"], list[dict[str, Any]]]
    max_empty: float = 0.0  # share of this template's examples allowed to have an empty result

    def fill_sql(self, slots: dict[str, Any]) -> str:
        return self.sql.format(**slots)


class Context:
    """Slot pools drawn from a generated warehouse."""

    def __init__(self, wh: W.Warehouse):
        rows = wh.rows
        self.countries = sorted({r[4] for r in rows["customers"]})
        self.cities = sorted({r[5] for r in rows["customers"]})
        self.customer_names = sorted(r[1] for r in rows["customers"])
        subscribed = {r[1] for r in rows["subscriptions"]}
        self.subscriber_names = sorted(r[1] for r in rows["customers"] if r[0] in subscribed)
        ordered = {r[1] for r in rows["orders"]}
        self.buyer_names = sorted(r[1] for r in rows["customers"] if r[0] in ordered)
        self.products = sorted(r[1] for r in rows["products"])
        self.forecast_products = sorted({
            p[1] for p in rows["products"] for f in rows["forecast_predictions"] if f[3] == p[0]
        })
        self.categories = list(W.CATEGORIES)
        self.segments = list(W.SEGMENTS)
        self.statuses = list(W.ORDER_STATUSES)
        self.channels = list(W.CHANNELS)
        self.plans = list(W.PLANS)
        self.cycles = list(W.BILLING_CYCLES)
        self.sub_statuses = list(W.SUB_STATUSES)
        self.churn_models = list(W.CHURN_MODELS)
        self.forecast_models = list(W.FORECAST_MODELS)
        self.forecast_dates = list(W.FORECAST_DATES)
        self.years = [2023, 2024]
        self.signup_years = [2022, 2023, 2024]
        self.months = [f"{y}-{m:02d}" for y in (2023, 2024) for m in range(1, 13)]
        self.signup_months = [f"{y}-{m:02d}" for y in (2022, 2023, 2024) for m in range(1, 13)][:34]
        self.thresholds = ["0.5", "0.6", "0.7", "0.8", "0.9"]


def grid(**pools: list[Any]) -> list[dict[str, Any]]:
    keys = list(pools)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(pools[k] for k in keys))]


def month_range(ym: str) -> tuple[str, str]:
    y, m = int(ym[:4]), int(ym[5:])
    return f"{ym}-01", f"{ym}-{calendar.monthrange(y, m)[1]:02d}"


def _with_range(slots: list[dict[str, Any]], key: str = "ym") -> list[dict[str, Any]]:
    for s in slots:
        s["d1"], s["d2"] = month_range(s[key])
    return slots


def _spans(ctx: Context) -> list[dict[str, Any]]:
    """Date spans of 1-3 whole months within the order history."""
    out = []
    for i, start in enumerate(ctx.months):
        for k in (0, 1, 2):
            if i + k < len(ctx.months):
                out.append({"d1": month_range(start)[0], "d2": month_range(ctx.months[i + k])[1]})
    return out


T = Template
TEMPLATES: tuple[Template, ...] = (
    # ------------------------------------------------------------------ single_table
    T("st_count_country_segment", "single_table", "easy", (
        "How many {segment} customers are from {country}?",
        "Count the customers in the {segment} segment located in {country}.",
        "What is the number of {segment} customers in {country}?",
    ), "SELECT COUNT(*) FROM customers WHERE country = '{country}' AND segment = '{segment}'",
        lambda c: grid(country=c.countries, segment=c.segments)),
    T("st_city_customers", "single_table", "easy", (
        "List the names of customers who live in {city}.",
        "Which customers are based in {city}? Sort by name.",
        "Show all customer names from the city {city}.",
    ), "SELECT name FROM customers WHERE city = '{city}' ORDER BY name",
        lambda c: grid(city=c.cities)),
    T("st_products_price", "single_table", "easy", (
        "Which {category} products cost more than {price}?",
        "List {category} products with a price above {price}, most expensive first.",
        "Show the name and price of {category} products priced over {price}.",
    ), "SELECT name, price FROM products WHERE category = '{category}' AND price > {price} "
       "ORDER BY price DESC, name",
        lambda c: grid(category=c.categories, price=[10, 20, 50, 100, 200])),
    T("st_orders_status_channel_year", "single_table", "easy", (
        "How many {status} orders were placed through the {channel} channel in {year}?",
        "Count the orders with status {status} from the {channel} channel in {year}.",
        "In {year}, how many orders placed via {channel} have the status {status}?",
    ), "SELECT COUNT(*) FROM orders WHERE status = '{status}' AND channel = '{channel}' "
       "AND @Y(order_date) = {year}",
        lambda c: grid(status=c.statuses, channel=c.channels, year=c.years)),
    T("st_signups_country_year", "single_table", "easy", (
        "How many customers from {country} signed up in {year}?",
        "Count the customers in {country} whose signup date is in {year}.",
        "What number of {country} customers joined in {year}?",
    ), "SELECT COUNT(*) FROM customers WHERE country = '{country}' AND @Y(signup_date) = {year}",
        lambda c: grid(country=c.countries, year=c.signup_years)),
    T("st_signup_range", "single_table", "medium", (
        "List the {segment} customers who signed up between {d1} and {d2}.",
        "Which {segment} customers joined from {d1} to {d2}? Show name and signup date.",
        "Show name and signup date of {segment} customers with a signup date between {d1} and {d2}.",
    ), "SELECT name, signup_date FROM customers WHERE segment = '{segment}' "
       "AND signup_date BETWEEN '{d1}' AND '{d2}' ORDER BY signup_date, name",
        lambda c: _with_range(grid(segment=c.segments, ym=c.signup_months))),
    T("st_orders_amount", "single_table", "easy", (
        "How many {channel} orders have a total amount above {amount}?",
        "Count orders from the {channel} channel whose total amount exceeds {amount}.",
    ), "SELECT COUNT(*) FROM orders WHERE channel = '{channel}' AND total_amount > {amount}",
        lambda c: grid(channel=c.channels, amount=[50, 100, 200, 300, 500, 800, 1000])),
    T("st_top_products_category", "single_table", "easy", (
        "What are the {n} most expensive {category} products?",
        "Show the top {n} {category} products by price.",
        "List the {n} highest priced products in the {category} category.",
    ), "SELECT name, price FROM products WHERE category = '{category}' ORDER BY price DESC, name LIMIT {n}",
        lambda c: grid(category=c.categories, n=[2, 3, 4, 5])),
    # ------------------------------------------------------------------ join
    T("j_orders_by_customer", "join", "easy", (
        "How many orders has {name} placed?",
        "Count the orders of the customer {name}.",
        "What is the number of orders made by {name}?",
    ), f"SELECT COUNT(*) FROM {J_CO} WHERE c.name = '{{name}}'",
        lambda c: grid(name=c.customer_names)),
    T("j_products_by_customer", "join", "medium", (
        "Which products did {name} buy?",
        "List the distinct products ordered by {name}.",
        "Show the names of all products {name} has purchased.",
    ), f"SELECT DISTINCT p.name FROM {J_ALL} WHERE c.name = '{{name}}' ORDER BY p.name",
        lambda c: grid(name=c.buyer_names)),
    T("j_country_status", "join", "medium", (
        "How many {status} orders came from customers in {country}?",
        "Count the orders with status {status} placed by customers from {country}.",
        "What is the number of {status} orders from {country}?",
    ), f"SELECT COUNT(*) FROM {J_CO} WHERE c.country = '{{country}}' AND o.status = '{{status}}'",
        lambda c: grid(country=c.countries, status=c.statuses)),
    T("j_customers_of_product", "join", "medium", (
        "Which customers from {country} bought {product}?",
        "List the customers in {country} who ordered {product}.",
        "Show the names of {country} customers that purchased {product}.",
    ), f"SELECT DISTINCT c.name FROM {J_ALL} WHERE c.country = '{{country}}' AND p.name = '{{product}}' "
       "ORDER BY c.name",
        lambda c: grid(country=c.countries, product=c.products)),
    T("j_units_category_country", "join", "medium", (
        "How many units of {category} products were sold to customers in {country}?",
        "What is the total quantity of {category} items ordered by customers from {country}?",
    ), f"SELECT SUM(oi.quantity) FROM {J_ALL} WHERE p.category = '{{category}}' AND c.country = '{{country}}'",
        lambda c: grid(category=c.categories, country=c.countries)),
    T("j_city_orders", "join", "medium", (
        "For each city in {country}, how many orders were placed in {year}?",
        "Count the {year} orders per city for customers in {country}.",
        "Show the number of orders by city in {country} during {year}.",
    ), f"SELECT c.city, COUNT(*) AS order_count FROM {J_CO} WHERE c.country = '{{country}}' "
       "AND @Y(o.order_date) = {year} GROUP BY c.city ORDER BY c.city",
        lambda c: grid(country=c.countries, year=c.years)),
    # ------------------------------------------------------------------ revenue
    T("r_country_year", "revenue", "medium", (
        "What was the total amount of completed orders from {country} in {year}?",
        "How much revenue did completed orders from customers in {country} bring in {year}?",
        "Sum the total amount of completed {year} orders placed by customers from {country}.",
    ), f"SELECT @ROUND(SUM(o.total_amount), 2) FROM {J_CO} WHERE c.country = '{{country}}' "
       "AND o.status = 'completed' AND @Y(o.order_date) = {year}",
        lambda c: grid(country=c.countries, year=c.years)),
    T("r_category_month", "revenue", "medium", (
        "Show revenue by product category for {ym}.",
        "What was the revenue of each category in {ym}, highest first?",
        "Break down the {ym} revenue by product category.",
    ), f"SELECT p.category, @ROUND(SUM({LINE}), 2) AS revenue FROM {J_ITEMS} "
       "WHERE @YM(o.order_date) = '{ym}' GROUP BY p.category ORDER BY revenue DESC, p.category",
        lambda c: grid(ym=c.months)),
    T("r_top_customers_country", "revenue", "hard", (
        "Who are the top {n} customers in {country} by total spending?",
        "List the {n} customers from {country} with the highest total order amount.",
        "Which {n} {country} customers spent the most? Show their total.",
    ), f"SELECT c.name, @ROUND(SUM(o.total_amount), 2) AS total_spent FROM {J_CO} "
       "WHERE c.country = '{country}' GROUP BY c.customer_id, c.name ORDER BY total_spent DESC, c.name LIMIT {n}",
        lambda c: grid(country=c.countries, n=[3, 5, 10])),
    T("r_product_year", "revenue", "medium", (
        "What revenue did {product} generate in {year}?",
        "How much revenue came from {product} in {year}?",
        "Total revenue of {product} for {year}?",
    ), f"SELECT @ROUND(SUM({LINE}), 2) FROM {J_ITEMS} WHERE p.name = '{{product}}' "
       "AND @Y(o.order_date) = {year}",
        lambda c: grid(product=c.products, year=c.years)),
    T("r_aov_channel_country", "revenue", "medium", (
        "What is the average order value per channel for customers in {country}?",
        "Show the average total amount of orders by channel for {country}.",
    ), f"SELECT o.channel, @ROUND(AVG(o.total_amount), 2) AS avg_order_value FROM {J_CO} "
       "WHERE c.country = '{country}' GROUP BY o.channel ORDER BY o.channel",
        lambda c: grid(country=c.countries)),
    T("r_margin_category_year", "revenue", "hard", (
        "What was the gross margin of {category} products in {year}?",
        "How much profit (price minus cost, times quantity) did {category} products make in {year}?",
    ), f"SELECT @ROUND(SUM(oi.quantity * (oi.unit_price - p.cost)), 2) FROM {J_ITEMS} "
       "WHERE p.category = '{category}' AND @Y(o.order_date) = {year}",
        lambda c: grid(category=c.categories, year=c.years)),
    T("r_discount_month", "revenue", "medium", (
        "How much discount was given on {category} items in {ym}?",
        "What was the total discount amount for {category} products in {ym}?",
    ), f"SELECT @ROUND(SUM(oi.quantity * oi.unit_price * oi.discount), 2) FROM {J_ITEMS} "
       "WHERE p.category = '{category}' AND @YM(o.order_date) = '{ym}'",
        lambda c: grid(category=c.categories, ym=c.months)),
    # ------------------------------------------------------------------ time_series
    T("ts_monthly_orders_country", "time_series", "medium", (
        "Show the number of orders per month from {country} in {year}.",
        "How many orders did customers in {country} place each month of {year}?",
        "Monthly order counts for {country} in {year}.",
    ), f"SELECT @YM(o.order_date) AS month, COUNT(*) AS order_count FROM {J_CO} "
       "WHERE c.country = '{country}' AND @Y(o.order_date) = {year} GROUP BY month ORDER BY month",
        lambda c: grid(country=c.countries, year=c.years)),
    T("ts_monthly_revenue_category", "time_series", "medium", (
        "What was the monthly revenue of {category} products in {year}?",
        "Show revenue per month for the {category} category in {year}.",
    ), f"SELECT @YM(o.order_date) AS month, @ROUND(SUM({LINE}), 2) AS revenue FROM {J_ITEMS} "
       "WHERE p.category = '{category}' AND @Y(o.order_date) = {year} GROUP BY month ORDER BY month",
        lambda c: grid(category=c.categories, year=c.years)),
    T("ts_signups_month", "time_series", "medium", (
        "How many new customers from {country} signed up each month in {year}?",
        "Show monthly signups of {country} customers in {year}.",
    ), "SELECT @YM(signup_date) AS month, COUNT(*) AS signups FROM customers "
       "WHERE country = '{country}' AND @Y(signup_date) = {year} GROUP BY month ORDER BY month",
        lambda c: grid(country=c.countries, year=c.signup_years)),
    T("ts_daily_orders", "time_series", "easy", (
        "How many {channel} orders were placed on each day of {ym}?",
        "Show the daily number of {channel} orders in {ym}.",
    ), "SELECT order_date, COUNT(*) AS order_count FROM orders WHERE channel = '{channel}' "
       "AND @YM(order_date) = '{ym}' GROUP BY order_date ORDER BY order_date",
        lambda c: grid(channel=c.channels, ym=c.months)),
    T("ts_best_month", "time_series", "hard", (
        "Which month of {year} had the most orders from {country}?",
        "In {year}, what was the busiest month for orders from {country}?",
    ), f"SELECT @YM(o.order_date) AS month, COUNT(*) AS order_count FROM {J_CO} "
       "WHERE c.country = '{country}' AND @Y(o.order_date) = {year} GROUP BY month "
       "ORDER BY order_count DESC, month LIMIT 1",
        lambda c: grid(country=c.countries, year=c.years)),
    T("ts_orders_between", "time_series", "easy", (
        "How many orders were placed between {d1} and {d2}?",
        "Count the orders with an order date from {d1} to {d2}.",
        "What is the number of orders dated between {d1} and {d2}?",
    ), "SELECT COUNT(*) FROM orders WHERE order_date BETWEEN '{d1}' AND '{d2}'",
        _spans),
    # ------------------------------------------------------------------ churn
    T("ch_count_threshold", "churn", "easy", (
        "How many customers have a churn probability above {t} according to model {mv}?",
        "Count the {mv} churn predictions with probability greater than {t}.",
    ), "SELECT COUNT(*) FROM churn_predictions WHERE model_version = '{mv}' AND churn_probability > {t}",
        lambda c: grid(mv=c.churn_models, t=c.thresholds)),
    T("ch_risky_country", "churn", "medium", (
        "List customers from {country} with a churn probability above {t} under model {mv}.",
        "Which {country} customers does {mv} score above {t} churn probability?",
        "Show name and churn probability of customers in {country} with probability over {t} in model {mv}.",
    ), f"SELECT c.name, cp.churn_probability FROM {J_CP} WHERE cp.model_version = '{{mv}}' "
       "AND c.country = '{country}' AND cp.churn_probability > {t} ORDER BY cp.churn_probability DESC, c.name",
        lambda c: grid(country=c.countries, t=c.thresholds, mv=c.churn_models)),
    T("ch_avg_segment_country", "churn", "medium", (
        "What is the average churn probability per segment for customers in {country} under model {mv}?",
        "Show the mean {mv} churn probability by segment for {country}.",
    ), f"SELECT c.segment, AVG(cp.churn_probability) AS avg_probability FROM {J_CP} "
       "WHERE cp.model_version = '{mv}' AND c.country = '{country}' GROUP BY c.segment ORDER BY c.segment",
        lambda c: grid(country=c.countries, mv=c.churn_models)),
    T("ch_accuracy_segment", "churn", "hard", (
        "What is the accuracy of churn model {mv} on {segment} customers with a known outcome?",
        "For {segment} customers whose actual outcome is known, how often is {mv} correct?",
    ), "SELECT @ROUND(AVG(CASE WHEN cp.predicted_label = cp.actual_label THEN 1.0 ELSE 0.0 END), 3) "
       f"FROM {J_CP} WHERE cp.model_version = '{{mv}}' AND c.segment = '{{segment}}' "
       "AND cp.actual_label IS NOT NULL",
        lambda c: grid(mv=c.churn_models, segment=c.segments)),
    T("ch_top_risk", "churn", "medium", (
        "Which {n} {segment} customers have the highest churn probability according to {mv}?",
        "List the top {n} {segment} customers most likely to churn under model {mv}.",
    ), f"SELECT c.name, cp.churn_probability FROM {J_CP} WHERE cp.model_version = '{{mv}}' "
       "AND c.segment = '{segment}' ORDER BY cp.churn_probability DESC, c.name LIMIT {n}",
        lambda c: grid(n=[3, 5, 10], segment=c.segments, mv=c.churn_models)),
    T("ch_customer_probability", "churn", "easy", (
        "What churn probability did model {mv} assign to {name}?",
        "What is the {mv} churn probability of {name}?",
        "Show the churn score of {name} from model {mv}.",
    ), f"SELECT cp.churn_probability FROM {J_CP} WHERE c.name = '{{name}}' AND cp.model_version = '{{mv}}'",
        lambda c: grid(name=c.customer_names, mv=c.churn_models)),
    T("ch_active_risky", "churn", "hard", (
        "Which customers with an active {plan} subscription have a churn probability above {t} in model {mv}?",
        "List active {plan} subscribers that {mv} scores above {t} churn probability.",
    ), "SELECT c.name, cp.churn_probability FROM customers c "
       "JOIN subscriptions s ON s.customer_id = c.customer_id "
       "JOIN churn_predictions cp ON cp.customer_id = c.customer_id "
       "WHERE s.status = 'active' AND s.plan = '{plan}' AND cp.model_version = '{mv}' "
       "AND cp.churn_probability > {t} ORDER BY cp.churn_probability DESC, c.name",
        lambda c: grid(plan=c.plans, t=c.thresholds, mv=c.churn_models)),
    T("ch_true_positives_country", "churn", "medium", (
        "How many customers in {country} did {mv} correctly predict would churn?",
        "Count the true positives of model {mv} among customers from {country}.",
    ), f"SELECT COUNT(*) FROM {J_CP} WHERE cp.model_version = '{{mv}}' AND c.country = '{{country}}' "
       "AND cp.predicted_label = 1 AND cp.actual_label = 1",
        lambda c: grid(country=c.countries, mv=c.churn_models)),
    # ------------------------------------------------------------------ forecast
    T("fc_category_date", "forecast", "easy", (
        "What revenue does model {fmv} forecast for {category} on {fdate}?",
        "Show the {fmv} category-level revenue forecast for {category} on {fdate}.",
        "What is the predicted revenue of the {category} category for {fdate} from {fmv}?",
    ), "SELECT predicted_revenue FROM forecast_predictions WHERE model_version = '{fmv}' "
       "AND category = '{category}' AND product_id IS NULL AND forecast_date = '{fdate}'",
        lambda c: grid(fmv=c.forecast_models, category=c.categories, fdate=c.forecast_dates)),
    T("fc_interval", "forecast", "medium", (
        "Show the monthly forecast interval for {category} from model {fmv}.",
        "List forecast date, lower bound and upper bound of the {fmv} category forecast for {category}.",
    ), "SELECT forecast_date, lower_bound, upper_bound FROM forecast_predictions WHERE model_version = '{fmv}' "
       "AND category = '{category}' AND product_id IS NULL ORDER BY forecast_date",
        lambda c: grid(fmv=c.forecast_models, category=c.categories)),
    T("fc_products_date", "forecast", "medium", (
        "Which {category} products have a unit forecast for {fdate}, and how many units are predicted?",
        "Show predicted units per {category} product for {fdate}, highest first.",
    ), "SELECT p.name, f.predicted_units FROM forecast_predictions f JOIN products p ON f.product_id = p.product_id "
       "WHERE p.category = '{category}' AND f.forecast_date = '{fdate}' ORDER BY f.predicted_units DESC, p.name",
        lambda c: grid(category=c.categories, fdate=c.forecast_dates)),
    T("fc_months_above", "forecast", "medium", (
        "In which months does {fmv} forecast more than {x} revenue for {category}?",
        "List the forecast dates where the {fmv} revenue forecast for {category} exceeds {x}.",
    ), "SELECT forecast_date, predicted_revenue FROM forecast_predictions WHERE model_version = '{fmv}' "
       "AND category = '{category}' AND product_id IS NULL AND predicted_revenue > {x} ORDER BY forecast_date",
        lambda c: grid(fmv=c.forecast_models, category=c.categories, x=[1000, 2000, 3000, 5000, 8000])),
    T("fc_product_total", "forecast", "easy", (
        "What is the total predicted revenue for {product} over the forecast horizon?",
        "Sum the forecast revenue of {product} across all forecast dates.",
    ), "SELECT @ROUND(SUM(f.predicted_revenue), 2) FROM forecast_predictions f "
       "JOIN products p ON f.product_id = p.product_id WHERE p.name = '{product}'",
        lambda c: grid(product=c.forecast_products)),
    T("fc_units_range", "forecast", "medium", (
        "What are the total forecast units per category from {fmv} between {fd1} and {fd2}?",
        "Sum the predicted units by category for model {fmv} from {fd1} to {fd2}.",
    ), "SELECT category, @ROUND(SUM(predicted_units), 1) AS total_units FROM forecast_predictions "
       "WHERE model_version = '{fmv}' AND product_id IS NULL AND forecast_date BETWEEN '{fd1}' AND '{fd2}' "
       "GROUP BY category ORDER BY category",
        lambda c: [dict(fmv=m, fd1=a, fd2=b) for m in c.forecast_models for i, a in enumerate(c.forecast_dates)
                   for b in c.forecast_dates[i + 1:]]),
    # ------------------------------------------------------------------ subscriptions
    T("sb_count_plan_status", "subscriptions", "easy", (
        "How many {status} {cycle} subscriptions are on the {plan} plan?",
        "Count the {plan} plan subscriptions with status {status} and {cycle} billing.",
    ), "SELECT COUNT(*) FROM subscriptions WHERE plan = '{plan}' AND status = '{status}' "
       "AND billing_cycle = '{cycle}'",
        lambda c: grid(plan=c.plans, status=c.sub_statuses, cycle=c.cycles)),
    T("sb_mrr_country_plan", "subscriptions", "medium", (
        "What is the total MRR of active {plan} subscriptions from customers in {country}?",
        "Sum the monthly recurring revenue of active {plan} subscriptions in {country}.",
    ), f"SELECT @ROUND(SUM(s.mrr), 2) FROM {J_SC} WHERE s.status = 'active' AND s.plan = '{{plan}}' "
       "AND c.country = '{country}'",
        lambda c: grid(plan=c.plans, country=c.countries)),
    T("sb_duration_country", "subscriptions", "hard", (
        "What is the average duration in days of cancelled subscriptions per plan for customers in {country}?",
        "For {country}, how many days did cancelled subscriptions last on average, by plan?",
    ), f"SELECT s.plan, AVG(@DAYS(s.end_date, s.start_date)) AS avg_days FROM {J_SC} "
       "WHERE s.status = 'cancelled' AND c.country = '{country}' GROUP BY s.plan ORDER BY s.plan",
        lambda c: grid(country=c.countries)),
    T("sb_started_after", "subscriptions", "medium", (
        "List customers who started a {plan} subscription on or after {d1}.",
        "Which customers began a {plan} subscription since {d1}? Show name and start date.",
    ), f"SELECT c.name, s.start_date FROM {J_SC} WHERE s.plan = '{{plan}}' AND s.start_date >= '{{d1}}' "
       "ORDER BY s.start_date, c.name",
        lambda c: _with_range(grid(plan=c.plans, ym=c.months[12:]))),
    T("sb_running_on", "subscriptions", "hard", (
        "How many {plan} subscriptions had started and not yet ended on {d1}?",
        "Count the {plan} subscriptions that were running on {d1}.",
    ), "SELECT COUNT(*) FROM subscriptions WHERE plan = '{plan}' AND start_date <= '{d1}' "
       "AND (end_date IS NULL OR end_date > '{d1}')",
        lambda c: _with_range(grid(plan=c.plans, ym=c.months))),
    # ------------------------------------------------------------------ window
    T("w_rank_products", "window", "hard", (
        "Rank the {category} products by revenue in {year}.",
        "Show each {category} product's {year} revenue and its rank.",
    ), f"SELECT p.name, @ROUND(SUM({LINE}), 2) AS revenue, RANK() OVER (ORDER BY SUM({LINE}) DESC) AS revenue_rank "
       f"FROM {J_ITEMS} WHERE p.category = '{{category}}' AND @Y(o.order_date) = {{year}} "
       "GROUP BY p.product_id, p.name ORDER BY revenue_rank, p.name",
        lambda c: grid(category=c.categories, year=c.years)),
    T("w_running_total", "window", "hard", (
        "Show the running total of completed order amounts by month in {year} for {country}.",
        "What is the cumulative monthly revenue from completed orders in {country} during {year}?",
    ), "SELECT month, @ROUND(revenue, 2) AS revenue, @ROUND(SUM(revenue) OVER (ORDER BY month), 2) AS running_total "
       f"FROM (SELECT @YM(o.order_date) AS month, SUM(o.total_amount) AS revenue FROM {J_CO} "
       "WHERE c.country = '{country}' AND o.status = 'completed' AND @Y(o.order_date) = {year} "
       "GROUP BY month) t ORDER BY month",
        lambda c: grid(country=c.countries, year=c.years)),
    T("w_order_sequence", "window", "medium", (
        "Number the orders of {name} in chronological order.",
        "Show each order of {name} with its sequence number by date.",
    ), "SELECT o.order_id, o.order_date, ROW_NUMBER() OVER (ORDER BY o.order_date, o.order_id) AS order_number "
       f"FROM {J_CO} WHERE c.name = '{{name}}' ORDER BY order_number",
        lambda c: grid(name=c.buyer_names)),
    T("w_previous_order", "window", "hard", (
        "For each order of {name}, show the date of the previous order.",
        "List the orders of {name} with the previous order date next to each.",
    ), "SELECT o.order_id, o.order_date, LAG(o.order_date) OVER (ORDER BY o.order_date, o.order_id) "
       f"AS previous_order_date FROM {J_CO} WHERE c.name = '{{name}}' ORDER BY o.order_date, o.order_id",
        lambda c: grid(name=c.buyer_names)),
    T("w_mom_change", "window", "hard", (
        "Show the month-over-month change in order count for {country} in {year}.",
        "How did the monthly number of orders from {country} change from month to month in {year}?",
    ), "SELECT month, order_count, order_count - LAG(order_count) OVER (ORDER BY month) AS change "
       f"FROM (SELECT @YM(o.order_date) AS month, COUNT(*) AS order_count FROM {J_CO} "
       "WHERE c.country = '{country}' AND @Y(o.order_date) = {year} GROUP BY month) t ORDER BY month",
        lambda c: grid(country=c.countries, year=c.years)),
    T("w_churn_rank", "window", "medium", (
        "Rank the {segment} customers by churn probability under model {mv} and show the top {n}.",
        "Show the {n} highest {mv} churn probabilities among {segment} customers with their dense rank.",
    ), "SELECT c.name, cp.churn_probability, DENSE_RANK() OVER (ORDER BY cp.churn_probability DESC) AS risk_rank "
       f"FROM {J_CP} WHERE c.segment = '{{segment}}' AND cp.model_version = '{{mv}}' "
       "ORDER BY risk_rank, c.name LIMIT {n}",
        lambda c: grid(segment=c.segments, mv=c.churn_models, n=[3, 5, 10])),
    T("w_forecast_cumulative", "window", "medium", (
        "Show the cumulative forecast units for {category} from model {fmv}.",
        "What is the running total of predicted units for the {category} category forecast of {fmv}?",
    ), "SELECT forecast_date, predicted_units, @ROUND(SUM(predicted_units) OVER (ORDER BY forecast_date), 1) "
       "AS cumulative_units FROM forecast_predictions WHERE model_version = '{fmv}' AND category = '{category}' "
       "AND product_id IS NULL ORDER BY forecast_date",
        lambda c: grid(category=c.categories, fmv=c.forecast_models)),
    # ------------------------------------------------------------------ complex_cte
    T("cx_above_avg_spenders", "complex_cte", "hard", (
        "Which customers from {country} spent more than the average {country} customer in {year}?",
        "List {country} customers whose {year} order total is above the country average for that year.",
    ), f"WITH spend AS (SELECT c.name, SUM(o.total_amount) AS total FROM {J_CO} WHERE c.country = '{{country}}' "
       "AND @Y(o.order_date) = {year} GROUP BY c.customer_id, c.name) "
       "SELECT name FROM spend WHERE total > (SELECT AVG(total) FROM spend) ORDER BY name",
        lambda c: grid(country=c.countries, year=c.years)),
    T("cx_forecast_vs_actual", "complex_cte", "hard", (
        "Compare the {fmv} revenue forecast for {category} on {fdate} with the actual revenue in {ym}.",
        "How far is the {fmv} forecast for {category} on {fdate} from the actual {category} revenue of {ym}?",
    ), f"WITH actual AS (SELECT SUM({LINE}) AS revenue FROM {J_ITEMS} WHERE p.category = '{{category}}' "
       "AND @YM(o.order_date) = '{ym}'), forecast AS (SELECT predicted_revenue FROM forecast_predictions "
       "WHERE model_version = '{fmv}' AND category = '{category}' AND product_id IS NULL "
       "AND forecast_date = '{fdate}') SELECT forecast.predicted_revenue, @ROUND(actual.revenue, 2) AS actual_revenue, "
       "@ROUND(forecast.predicted_revenue - actual.revenue, 2) AS difference FROM forecast, actual",
        lambda c: [dict(fmv=m, category=k, fdate=d, ym="2024" + d[4:7]) for m in c.forecast_models
                   for k in c.categories for d in c.forecast_dates]),
    T("cx_subscribers_without_orders", "complex_cte", "hard", (
        "Which customers in {country} have an active subscription but placed no orders in {year}?",
        "List active subscribers from {country} who did not order anything in {year}.",
    ), "WITH buyers AS (SELECT DISTINCT customer_id FROM orders WHERE @Y(order_date) = {year}) "
       f"SELECT c.name FROM {J_SC} WHERE s.status = 'active' AND c.country = '{{country}}' "
       "AND c.customer_id NOT IN (SELECT customer_id FROM buyers) ORDER BY c.name",
        lambda c: grid(country=c.countries, year=c.years), max_empty=0.2),
    T("cx_repeat_rate", "complex_cte", "hard", (
        "What percentage of customers from {country} who ordered in {year} placed more than one order that year?",
        "Among {country} customers with orders in {year}, what share (in percent) ordered more than once?",
    ), f"WITH counts AS (SELECT c.customer_id, COUNT(*) AS n FROM {J_CO} WHERE c.country = '{{country}}' "
       "AND @Y(o.order_date) = {year} GROUP BY c.customer_id) "
       "SELECT @ROUND(100.0 * SUM(CASE WHEN n > 1 THEN 1 ELSE 0 END) / COUNT(*), 2) FROM counts",
        lambda c: grid(country=c.countries, year=c.years)),
    T("cx_category_share", "complex_cte", "hard", (
        "What percentage of {year} revenue from {country} did each category contribute?",
        "Show each category's share of revenue in percent for customers in {country} in {year}.",
    ), f"WITH cat AS (SELECT p.category, SUM({LINE}) AS revenue FROM {J_ALL} WHERE c.country = '{{country}}' "
       "AND @Y(o.order_date) = {year} GROUP BY p.category) "
       "SELECT category, @ROUND(100.0 * revenue / SUM(revenue) OVER (), 2) AS pct FROM cat ORDER BY pct DESC, category",
        lambda c: grid(country=c.countries, year=c.years)),
    T("cx_risky_revenue", "complex_cte", "hard", (
        "What is the total amount of completed orders placed by customers whose {mv} churn probability is above {t}?",
        "How much did customers with churn probability over {t} under model {mv} spend on completed orders?",
    ), "WITH risky AS (SELECT customer_id FROM churn_predictions WHERE model_version = '{mv}' "
       "AND churn_probability > {t}) SELECT @ROUND(SUM(o.total_amount), 2) FROM orders o "
       "JOIN risky r ON o.customer_id = r.customer_id WHERE o.status = 'completed'",
        lambda c: grid(mv=c.churn_models, t=c.thresholds)),
    # ------------------------------------------------------------------ edge_cases
    T("e_no_email", "edge_cases", "easy", (
        "Which {segment} customers in {country} have no email address?",
        "List {segment} customers from {country} whose email is missing.",
    ), "SELECT name FROM customers WHERE country = '{country}' AND segment = '{segment}' AND email IS NULL "
       "ORDER BY name",
        lambda c: grid(country=c.countries, segment=c.segments), max_empty=0.35),
    T("e_missing_phone_count", "edge_cases", "easy", (
        "How many customers in {city} have no phone number?",
        "Count customers from {city} with a missing phone number.",
    ), "SELECT COUNT(*) FROM customers WHERE city = '{city}' AND phone IS NULL",
        lambda c: grid(city=c.cities)),
    T("e_end_date_coalesce", "edge_cases", "medium", (
        "Show the subscriptions of {name} with their end date, or 'ongoing' when there is none.",
        "List plan, status, start date and end date (use 'ongoing' if missing) of {name}'s subscriptions.",
    ), "SELECT s.plan, s.status, s.start_date, COALESCE(CAST(s.end_date AS TEXT), 'ongoing') AS end_date "
       f"FROM {J_SC} WHERE c.name = '{{name}}' ORDER BY s.start_date",
        lambda c: grid(name=c.subscriber_names)),
    T("e_never_ordered", "edge_cases", "medium", (
        "Which {category} products have never been ordered by customers from {country}?",
        "List {category} products that no customer in {country} has bought.",
    ), "SELECT p.name FROM products p WHERE p.category = '{category}' AND p.product_id NOT IN "
       f"(SELECT oi.product_id FROM {J_ALL.replace(' JOIN products p ON oi.product_id = p.product_id', '')} "
       "WHERE c.country = '{country}') ORDER BY p.name",
        lambda c: grid(category=c.categories, country=c.countries), max_empty=0.3),
    T("e_ties_most_orders", "edge_cases", "hard", (
        "Which customers from {country} placed the most orders in {year}? Include ties.",
        "List all {country} customers tied for the highest number of orders in {year}.",
    ), f"WITH counts AS (SELECT c.name, COUNT(*) AS order_count FROM {J_CO} WHERE c.country = '{{country}}' "
       "AND @Y(o.order_date) = {year} GROUP BY c.customer_id, c.name) SELECT name, order_count FROM counts "
       "WHERE order_count = (SELECT MAX(order_count) FROM counts) ORDER BY name",
        lambda c: grid(country=c.countries, year=c.years)),
    T("e_orders_in_month", "edge_cases", "medium", (
        "List the orders {name} placed in {ym}.",
        "Show order id and total amount of {name}'s orders from {ym}, if any.",
    ), f"SELECT o.order_id, o.total_amount FROM {J_CO} WHERE c.name = '{{name}}' AND @YM(o.order_date) = '{{ym}}' "
       "ORDER BY o.order_id",
        lambda c: grid(name=c.buyer_names, ym=c.months), max_empty=0.25),
    T("e_never_subscribed", "edge_cases", "medium", (
        "How many {segment} customers in {country} have never had a subscription?",
        "Count {segment} customers from {country} without any subscription.",
    ), "SELECT COUNT(*) FROM customers c WHERE c.country = '{country}' AND c.segment = '{segment}' "
       "AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.customer_id = c.customer_id)",
        lambda c: grid(country=c.countries, segment=c.segments)),
)
del T

TEMPLATES_BY_ID = {t.id: t for t in TEMPLATES}

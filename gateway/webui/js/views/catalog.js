// The catalog editor: brands, SKUs and their prices, troubleshooting guides; retire and bring
// back; the change history. Merchants edit their brands only (the gateway refuses the rest).
import { errorText } from "../app.js";
import { clear, h, table } from "../dom.js";
import { fmt, t } from "../i18n.js";

export function catalogView(app, main) {
  const status = h("p", { class: "status", role: "status" });
  const lists = h("div", { id: "catalog" });
  const history = h("div", { id: "history" });
  const guides = h("div", { id: "guides" });
  let catalog = null;
  const ours = (brand) => !app.brands || app.brands.includes(brand);

  function field(label, attrs) {
    const input = h(attrs.tag || "input", { type: "text", ...attrs, tag: null });
    return [h("label", {}, label, input), input];
  }

  async function save(type, fields) {
    try {
      await app.client.request(type, fields);
      status.textContent = t("Saved.");
      await load();
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  const [brandLabel, brandId] = field(t("Brand id"), { id: "brand-id", pattern: "[a-z0-9_-]+", required: true });
  const [brandNameLabel, brandName] = field(t("Name"), { id: "brand-name", required: true });
  const brandForm = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
    save("catalog.brand.save", { brand: brandId.value, name: brandName.value }); } },
  h("h2", {}, t("Brand")), brandLabel, brandNameLabel, h("button", { type: "submit" }, t("Save brand")));

  const [skuLabel, skuId] = field(t("SKU"), { id: "sku-id", required: true });
  const [skuBrandLabel, skuBrand] = field(t("Brand id"), { id: "sku-brand", required: true });
  const [skuCatLabel, skuCat] = field(t("Category"), { id: "sku-category", required: true });
  const [skuNameLabel, skuName] = field(t("Name"), { id: "sku-name", required: true });
  const skuForm = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
    save("catalog.sku.save", { sku: skuId.value, brand: skuBrand.value, category: skuCat.value, name: skuName.value }); } },
  h("h2", {}, t("SKU")), skuLabel, skuBrandLabel, skuCatLabel, skuNameLabel, h("button", { type: "submit" }, t("Save SKU")));

  const [priceSkuLabel, priceSku] = field(t("SKU"), { id: "price-sku", required: true });
  const [serviceLabel, service] = field(t("Service"), { id: "price-service", required: true, value: "repair" });
  const [amountLabel, amount] = field(t("Price"), { id: "price-amount", type: "number", min: "0.01", step: "0.01", required: true });
  const priceForm = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
    save("catalog.price.save", { sku: priceSku.value, service_type: service.value,
      price_cents: Math.round(Number(amount.value) * 100) }); } },
  h("h2", {}, t("Price")), priceSkuLabel, serviceLabel, amountLabel, h("button", { type: "submit" }, t("Save price")));

  const [guideBrandLabel, guideBrand] = field(t("Brand id"), { id: "guide-brand" });
  const [guideCatLabel, guideCat] = field(t("Category"), { id: "guide-category" });
  const [guideTitleLabel, guideTitle] = field(t("Title"), { id: "guide-title", required: true });
  const [guideBodyLabel, guideBody] = field(t("Guide"), { id: "guide-body", tag: "textarea", required: true, rows: 4 });
  const guideForm = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
    const fields = { title: guideTitle.value, body: guideBody.value };
    if (guideBrand.value) fields.brand = guideBrand.value;
    if (guideCat.value) fields.category = guideCat.value;
    save("catalog.guide.save", fields); } },
  h("h2", {}, t("Troubleshooting guide")), guideBrandLabel, guideCatLabel, guideTitleLabel, guideBodyLabel,
  h("button", { type: "submit" }, t("Save guide")));

  clear(main, h("h1", {}, t("Catalog")), status, h("div", { class: "forms" }, brandForm, skuForm, priceForm, guideForm),
    lists, h("h2", {}, t("Guides")), guides, h("h2", {}, t("Change history")), history);

  const retire = (fields, retired) => h("button", { type: "button", class: "small", onclick: () =>
    save("catalog.retire", { ...fields, retired }) }, retired ? t("Retire") : t("Bring back"));

  function draw() {
    clear(lists,
      h("h2", {}, t("Brands")),
      table([
        { key: "id", label: t("Brand id") }, { key: "name", label: t("Name") },
        { key: "retired", label: t("Retired"), render: (b) => (b.retired ? t("yes") : t("no")) },
        { key: "act", label: "", render: (b) => retire({ kind: "brand", brand: b.id }, !b.retired) },
      ], catalog.brands.filter((b) => ours(b.id))),
      h("h2", {}, t("SKUs and prices")),
      table([
        { key: "id", label: t("SKU") }, { key: "brand", label: t("Brand") }, { key: "category", label: t("Category") },
        { key: "name", label: t("Name") },
        { key: "prices", label: t("Prices"), render: (s) => s.prices.map((p) => h("div", {},
          `${t(p.service_type)} ${fmt.money(p.price_cents, p.currency)}${p.retired ? ` (${t("retired")})` : ""} `,
          retire({ kind: "price", sku: s.id, service_type: p.service_type }, !p.retired))) },
        { key: "retired", label: t("Retired"), render: (s) => (s.retired ? t("yes") : t("no")) },
        { key: "act", label: "", render: (s) => retire({ kind: "sku", sku: s.id }, !s.retired) },
      ], catalog.skus.filter((s) => ours(s.brand))));
  }

  async function load() {
    try {
      await app.watched;
      catalog = await app.client.request("catalog.list", {});
      draw();
      const [changes, found] = await Promise.all([app.client.request("catalog.history", { limit: 50 }),
        app.client.request("catalog.guides", { limit: 50 })]);
      found.guides = found.guides.filter((g) => !g.brand || ours(g.brand));
      clear(history, table([
        { key: "at", label: t("When"), render: (c) => fmt.when(c.at) },
        { key: "actor", label: t("By"), render: (c) => `${t(c.actor_role)} ${c.actor_id.slice(0, 8)}` },
        { key: "kind", label: t("What"), render: (c) => `${t(c.kind)} ${c.key}` },
        { key: "before", label: t("Before"), render: (c) => (c.before ? JSON.stringify(c.before) : "—") },
        { key: "after", label: t("After"), render: (c) => JSON.stringify(c.after) },
      ], changes.changes));
      clear(guides, table([
        { key: "title", label: t("Title") }, { key: "brand", label: t("Brand"), render: (g) => g.brand || t("all") },
        { key: "category", label: t("Category"), render: (g) => g.category || "" },
        { key: "locale", label: t("Language") }, { key: "updated_at", label: t("Updated"), render: (g) => fmt.when(g.updated_at) },
      ], found.guides));
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  return { ready: load(), reload: load };
}

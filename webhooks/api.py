"""The webhooks REST API (docs/api.md, "Webhooks"): thin views over
webhooks/services.py and webhooks/selectors.py.

* `/api/webhooks/`: the caller's webhooks (a new one's `secret` is shown once),
  each with its deliveries;
* `/api/threads/{id}/webhook/`: a thread's webhook, set by its owner;
* `/api/runs/{id}/webhook/`: a run names one of the caller's webhooks;
* `/api/webhooks/deliveries/{id}/` and `.../redeliver/`.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from restapi.serializers import ErrorSerializer
from restapi.views import UUID_PATTERN, ApiViewMixin, validated
from webhooks import selectors, services
from webhooks.models import Webhook
from webhooks.serializers import (
    RunWebhookInputSerializer,
    RunWebhookSerializer,
    WebhookCreatedSerializer,
    WebhookDeliverySerializer,
    WebhookInputSerializer,
    WebhookSerializer,
)

REFUSED_URL = OpenApiResponse(
    ErrorSerializer,
    description="webhook_url_invalid, webhook_host_not_allowed (not in "
    "PARLEY_WEBHOOK_ALLOWED_HOSTS), webhook_https_required, validation_error.",
)


@extend_schema(tags=["webhooks"])
class WebhookViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's webhooks; anyone else's do not exist for it (404)."""

    queryset = Webhook.objects.none()
    serializer_class = WebhookSerializer
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self) -> QuerySet[Webhook]:
        if getattr(self, "swagger_fake_view", False):
            return Webhook.objects.none()
        return selectors.webhook_list_for_user(user=self.request.user)

    def get_object(self) -> Webhook:
        return selectors.webhook_get_for_user(
            user=self.request.user, webhook_id=self.kwargs["pk"]
        )

    @extend_schema(
        request=WebhookInputSerializer,
        responses={201: WebhookCreatedSerializer, 400: REFUSED_URL},
        summary="Create a webhook that runs can name (its secret is shown once)",
    )
    def create(self, request):
        data = validated(WebhookInputSerializer, request.data)
        webhook = services.webhook_create(owner=request.user, **data)
        return Response(
            WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses={204: None}, summary="Delete a webhook")
    def destroy(self, request, pk=None):
        services.webhook_delete(webhook=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        responses=WebhookDeliverySerializer(many=True),
        summary="The webhook's deliveries, newest first, with every attempt",
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        deliveries = selectors.delivery_list_for_webhook(webhook=self.get_object())
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(
            WebhookDeliverySerializer(page, many=True).data
        )


@extend_schema(tags=["webhooks"])
class ThreadWebhookView(ApiViewMixin, APIView):
    """The thread's webhook: called when any of its runs ends (owner only)."""

    @extend_schema(responses=WebhookSerializer, summary="The thread's webhook")
    def get(self, request, id):
        webhook = selectors.thread_webhook_get(user=request.user, thread_id=id)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(
        request=WebhookInputSerializer,
        responses={
            200: WebhookSerializer,
            201: WebhookCreatedSerializer,
            400: REFUSED_URL,
        },
        summary="Set the thread's webhook (201 with its secret when new)",
        description="A new webhook answers `201` with its `secret`, shown this "
        "once; changing the URL of the existing one answers `200` and keeps "
        "the secret.",
    )
    def put(self, request, id):
        data = validated(WebhookInputSerializer, request.data)
        webhook, created = services.thread_webhook_set(
            actor=request.user, thread_id=id, **data
        )
        if created:
            return Response(
                WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED
            )
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(responses={204: None}, summary="Remove the thread's webhook")
    def delete(self, request, id):
        services.thread_webhook_delete(actor=request.user, thread_id=id)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["webhooks"])
class RunWebhookView(ApiViewMixin, APIView):
    @extend_schema(
        request=RunWebhookInputSerializer,
        responses={200: RunWebhookSerializer, 201: RunWebhookSerializer},
        summary="Deliver this run's end to one of your webhooks",
        description="`201` (`200` when the run named it already). A run that "
        "has already ended is delivered at once.",
    )
    def post(self, request, id):
        data = validated(RunWebhookInputSerializer, request.data)
        webhook = selectors.webhook_get_for_user(
            user=request.user, webhook_id=data["webhook"]
        )
        link, created = services.run_webhook_add(
            actor=request.user, run_id=id, webhook=webhook
        )
        return Response(
            RunWebhookSerializer(link).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


@extend_schema(tags=["webhooks"])
class DeliveryView(ApiViewMixin, APIView):
    @extend_schema(
        responses=WebhookDeliverySerializer, summary="One delivery and its attempts"
    )
    def get(self, request, id):
        delivery = selectors.delivery_get_for_user(user=request.user, delivery_id=id)
        return Response(WebhookDeliverySerializer(delivery).data)


@extend_schema(tags=["webhooks"])
class DeliveryRedeliverView(ApiViewMixin, APIView):
    @extend_schema(
        request=None,
        responses={202: WebhookDeliverySerializer},
        summary="Send a delivery again (same id and body, new attempts)",
    )
    def post(self, request, id):
        delivery = selectors.delivery_get_for_user(user=request.user, delivery_id=id)
        delivery = services.delivery_redeliver(delivery=delivery)
        return Response(
            WebhookDeliverySerializer(
                selectors.delivery_get_for_user(
                    user=request.user, delivery_id=delivery.pk
                )
            ).data,
            status=status.HTTP_202_ACCEPTED,
        )
